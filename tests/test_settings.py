"""Settings memory against the real database, through the real CLI."""

from __future__ import annotations

import itertools
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltm_cli.config import load_config
from ltm_cli.errors import ExitCode, InvalidInputError
from ltm_cli.services import settings as svc
from ltm_cli.storage.engine import Database
from ltm_cli.storage.stores import StoreRef
from tests.conftest import run_ltm


def test_set_then_get_prints_the_number_and_json_returns_a_number(cli):
    assert cli("settings", "set", "voice.speed", "1.2").exit_code == 0
    assert cli("settings", "get", "voice.speed").stdout == "1.2\n"
    assert cli("settings", "get", "voice.speed", "--json").json() == 1.2


@pytest.mark.parametrize(("raw", "expected"), [
    ("true", True), ("null", None), ("[1, 2]", [1, 2]), ('{"a": "b"}', {"a": "b"}), ("hello there", "hello there"),
    ('"quoted"', "quoted"), ("1e3", 1000.0),
])
def test_values_are_json_when_valid_else_strings(cli, raw, expected):
    cli("settings", "set", "k", raw)
    assert cli("settings", "get", "k", "--json").json() == expected


def test_string_flag_keeps_json_looking_text_as_a_string(cli):
    cli("settings", "set", "k", "1.2", "--string")
    assert cli("settings", "get", "k", "--json").json() == "1.2"


def test_strings_print_raw_for_shell_substitution(cli):
    cli("settings", "set", "prompts.system", "You are \"helpful\".")
    assert cli("settings", "get", "prompts.system").stdout == 'You are "helpful".'


def test_setting_the_same_value_again_records_no_version_unless_forced(cli):
    cli("settings", "set", "a", "1")
    again = cli("settings", "set", "a", "1", "--json")
    assert again.json()["changed"] is False
    assert len(cli("settings", "history", "a", "--json").json()) == 1
    cli("settings", "set", "a", "1", "--force")
    assert len(cli("settings", "history", "a", "--json").json()) == 2


def test_true_and_one_are_different_values(cli):
    cli("settings", "set", "a", "1")
    assert cli("settings", "set", "a", "true", "--json").json()["changed"] is True


def test_get_of_a_group_returns_the_subtree(cli):
    cli("settings", "set", "voice.speed", "1.2")
    cli("settings", "set", "voice.pitch.base", "3")
    cli("settings", "set", "voiceover", "x")
    assert cli("settings", "get", "voice", "--json").json() == {"speed": 1.2, "pitch": {"base": 3}}


def test_missing_key_exits_not_found_unless_default_given(cli):
    missing = cli("settings", "get", "nope")
    assert missing.exit_code == ExitCode.NOT_FOUND
    assert missing.stderr.startswith("error:") and "nope" in missing.stderr
    with_default = cli("settings", "get", "nope", "--default", "0.5", "--json")
    assert with_default.exit_code == 0 and with_default.json() == 0.5


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a b", "ü", "a/b"])
def test_invalid_keys_are_rejected_with_invalid_input(cli, bad):
    result = cli("settings", "set", bad, "1")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "invalid setting key" in result.stderr


def test_a_key_cannot_be_both_a_value_and_a_group(cli):
    cli("settings", "set", "voice", "1")
    child = cli("settings", "set", "voice.speed", "2")
    assert child.exit_code == ExitCode.CONFLICT
    assert "both a value and a group" in child.stderr
    cli("settings", "set", "tone.warmth", "2")
    parent = cli("settings", "set", "tone", "1")
    assert parent.exit_code == ExitCode.CONFLICT


def test_unset_records_a_deletion_that_history_keeps(cli):
    cli("settings", "set", "a", "1")
    assert cli("settings", "unset", "a").exit_code == 0
    assert cli("settings", "get", "a").exit_code == ExitCode.NOT_FOUND
    history = cli("settings", "history", "a", "--json").json()
    assert [h["deleted"] for h in history] == [False, True]
    assert cli("settings", "set", "a.b", "1").exit_code == 0  # a is gone, so it may become a group


def test_unset_of_a_group_needs_recursive(cli):
    cli("settings", "set", "g.a", "1")
    cli("settings", "set", "g.b", "2")
    assert cli("settings", "unset", "g").exit_code == ExitCode.CONFLICT
    assert cli("settings", "unset", "g", "-r", "--json").json()["removed"] == ["g.a", "g.b"]
    assert cli("settings", "list", "--json").json() == []


def test_history_lists_every_version_with_note_and_author(cli):
    cli("settings", "set", "voice.speed", "1.0", "--note", "initial", "--by", "alice")
    cli("settings", "set", "voice.speed", "1.2", "--note", "user asked faster", "--by", "agent")
    rows = cli("settings", "history", "voice.speed", "--json").json()
    assert [(r["version"], r["value"], r["note"], r["author"]) for r in rows] == [
        (1, 1.0, "initial", "alice"), (2, 1.2, "user asked faster", "agent")]
    table = cli("settings", "history", "voice.speed")
    assert "user asked faster" in table.stdout


def test_revert_defaults_to_undo_and_accepts_a_version(cli):
    for value in ("1", "2", "3"):
        cli("settings", "set", "k", value)
    undone = cli("settings", "revert", "k", "--json").json()
    assert undone["value"] == 2 and undone["version"] == 4
    assert cli("settings", "revert", "k", "--to", "1", "--json").json()["value"] == 1
    assert cli("settings", "get", "k").stdout.strip() == "1"
    assert cli("settings", "revert", "k", "--to", "99").exit_code == ExitCode.NOT_FOUND


def test_get_and_revert_at_a_point_in_time(cli):
    cli("settings", "set", "k", "old")
    history = cli("settings", "history", "k", "--json").json()
    moment = history[0]["created_at"]
    time.sleep(0.05)
    cli("settings", "set", "k", "new")
    assert cli("settings", "get", "k", "--at", moment).stdout == "old"
    assert cli("settings", "get", "k", "--at", "2000-01-01").exit_code == ExitCode.NOT_FOUND
    assert cli("settings", "revert", "k", "--at", moment, "--json").json()["value"] == "old"
    assert cli("settings", "get", "k", "--at", "yesterday-ish").exit_code == ExitCode.INVALID_INPUT


def test_list_formats(cli):
    cli("settings", "set", "voice.speed", "1.2")
    cli("settings", "set", "prompts.system", "Be brief, it's late.")
    assert [r["key"] for r in cli("settings", "list", "--json").json()] == ["prompts.system", "voice.speed"]
    env = cli("settings", "list", "--format", "env").stdout
    assert "VOICE_SPEED=1.2" in env and "PROMPTS_SYSTEM='Be brief, it'\"'\"'s late.'" in env
    assert 'speed = 1.2' in cli("settings", "list", "--format", "toml").stdout
    assert [r["key"] for r in cli("settings", "list", "voice", "--json").json()] == ["voice.speed"]


def test_large_unicode_value_round_trips_byte_for_byte_through_a_file(cli, tmp_path):
    text = ("Tu es un assistant 🤖 — ünïcödé, 中文, עברית\n" * 2500)[:100_000] + "\n\n  trailing  "
    source = tmp_path / "prompt.txt"
    source.write_text(text, encoding="utf-8")
    assert cli("settings", "set", "prompts.system", "--file", str(source)).exit_code == 0
    out = cli("settings", "get", "prompts.system").stdout
    assert out.encode("utf-8") == source.read_bytes()


def test_value_from_stdin(cli):
    assert cli("settings", "set", "p", "-", input="line one\nline two\n").exit_code == 0
    assert cli("settings", "get", "p").stdout == "line one\nline two\n"


def test_nul_characters_are_rejected_clearly(cli):
    result = cli("settings", "set", "p", "-", input="a\x00b")
    assert result.exit_code == ExitCode.INVALID_INPUT and "NUL" in result.stderr


def test_export_then_import_round_trips_json_and_toml(cli, tmp_path, store):
    cli("settings", "set", "voice.speed", "1.2")
    cli("settings", "set", "voice.name", "Ava")
    cli("settings", "set", "tools", '["search", "calc"]')
    for name in ("s.json", "s.toml"):
        path = tmp_path / name
        assert cli("settings", "export", str(path)).exit_code == 0
        other = f"{store}-{name.split('.')[1]}"
        result = cli("settings", "import", str(path), "--store", other, "--json").json()
        assert sorted(result["added"]) == ["tools", "voice.name", "voice.speed"]
        assert cli("settings", "export", "--store", other).json() == cli("settings", "export").json()


def test_import_reports_added_changed_unchanged_and_dry_run_writes_nothing(cli, tmp_path):
    cli("settings", "set", "a", "1")
    cli("settings", "set", "b", "2")
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"a": 1, "b": 3, "c": "new"}))
    dry = cli("settings", "import", str(path), "--dry-run", "--json").json()
    assert (dry["added"], dry["changed"], dry["unchanged"]) == (["c"], ["b"], ["a"])
    assert cli("settings", "get", "c").exit_code == ExitCode.NOT_FOUND
    real = cli("settings", "import", str(path))
    assert real.exit_code == 0 and "1 added, 1 changed, 1 unchanged" in real.stderr
    assert cli("settings", "get", "b").stdout.strip() == "3"


@pytest.mark.parametrize("bad_entry", [{"bad key": 1}, {"x.y": 1, "x": 2}, {"a.deeper": 1}])
def test_import_with_a_bad_entry_in_the_middle_writes_nothing(cli, tmp_path, bad_entry):
    cli("settings", "set", "a", "0")
    entries = {"first": 1, **bad_entry, "last": 2}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(entries))
    result = cli("settings", "import", str(path))
    assert result.exit_code in (ExitCode.INVALID_INPUT, ExitCode.CONFLICT)
    assert "nothing written" in result.stderr
    assert [r["key"] for r in cli("settings", "list", "--json").json()] == ["a"]


def test_import_of_invalid_json_names_the_line(cli, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n "a": 1,\n "b": \n}')
    result = cli("settings", "import", str(path))
    assert result.exit_code == ExitCode.INVALID_INPUT and "line 4" in result.stderr


def test_concurrent_writers_lose_nothing(store):
    writers, each = 6, 5

    def write(n: int) -> list[int]:
        codes = []
        for i in range(each):
            done = run_ltm("settings", "set", "counter", json.dumps(f"w{n}-{i}"), "--store", store)
            codes.append(done.returncode)
        return codes

    with ThreadPoolExecutor(writers) as pool:
        codes = [c for batch in pool.map(write, range(writers)) for c in batch]
    assert codes == [0] * (writers * each)
    history = json.loads(run_ltm("settings", "history", "counter", "--json", "--store", store).stdout)
    assert [h["version"] for h in history] == list(range(1, writers * each + 1))
    assert sorted(h["value"] for h in history) == sorted(f"w{n}-{i}" for n in range(writers) for i in range(each))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
        children, max_size=4),
    max_leaves=10,
)
keys = st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), min_size=1, max_size=4).map(".".join)


_examples = itertools.count()


@pytest.fixture
def db():
    database = Database(load_config())
    yield database
    database.dispose()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=keys, value=json_values)
def test_any_json_value_round_trips_through_the_service(db, store, key, value):
    key = f"example{next(_examples)}.{key}"  # each example its own group: keys never collide by shape
    ref = StoreRef(store)
    svc.set_value(db, ref, key, value, force=True)
    assert svc.canonical(svc.get(db, ref, key)) == svc.canonical(value)


def _holds_infinity(raw: str) -> bool:
    try:
        value = json.loads(raw)
    except ValueError:
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and math.isinf(item):
            return True
        stack.extend(item.values() if isinstance(item, dict) else item if isinstance(item, list) else [])
    return False


@given(st.text())
def test_parse_value_never_crashes_and_is_json_or_the_text(raw):
    try:
        value = svc.parse_value(raw)
    except InvalidInputError:
        assert "\x00" in raw or any(0xD800 <= ord(c) <= 0xDFFF for c in raw) or _holds_infinity(raw)
        return
    if isinstance(value, str) and value == raw:
        return
    assert svc.canonical(value) == svc.canonical(json.loads(raw))


# -- settings files: one rule for JSON and TOML ---------------------------------------------------------
def test_toml_export_of_an_object_value_imports_back_as_one_value(cli, tmp_path, store):
    cli("settings", "set", "obj.v", '{"x": 1, "y": [1,2]}')
    path = tmp_path / "rt.toml"
    assert cli("settings", "export", str(path)).exit_code == 0
    other = cli("settings", "import", str(path), "--store", f"{store}-2", "--json")
    assert other.exit_code == 0 and other.json()["added"] == ["obj.v"]
    assert cli("settings", "get", "obj.v", "--store", f"{store}-2", "--json").json() == {"x": 1, "y": [1, 2]}
    again = cli("settings", "import", str(path), "--json")
    assert again.exit_code == 0 and again.json()["unchanged"] == ["obj.v"]


ROUND_TRIP = {
    "voice.speed": 1.2,  # a key without an object value beside ones with
    "voice.name": "Ava",
    "obj.v": {"x": 1, "y": [1, 2], "deep": {"z": {"w": "deeper"}}},  # nested objects
    "tools": [{"name": "search", "args": {"k": 3}}, {"name": "calc"}],  # an array of objects
    "mixed": [1, "two", {"three": 3}],
    "profile": {"tone": "warm"},  # a one-segment key holding an object
    "empty": {},
    "marker": {"$value": 5},  # an object whose only key is the marker itself
}


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_export_then_import_round_trips_object_values_and_plain_keys(cli, tmp_path, store, fmt):
    for key, value in ROUND_TRIP.items():
        assert cli("settings", "set", key, json.dumps(value)).exit_code == 0
    assert {v["key"]: v["value"] for v in cli("settings", "list", "--json").json()} == ROUND_TRIP
    path = tmp_path / f"out.{fmt}"
    assert cli("settings", "export", str(path)).exit_code == 0
    other = f"{store}-copy"
    added = cli("settings", "import", str(path), "--store", other, "--json")
    assert added.exit_code == 0 and sorted(added.json()["added"]) == sorted(ROUND_TRIP)
    assert {v["key"]: v["value"] for v in cli("settings", "list", "--store", other, "--json").json()} == ROUND_TRIP
    own = cli("settings", "import", str(path), "--json")
    assert own.exit_code == 0 and sorted(own.json()["unchanged"]) == sorted(ROUND_TRIP)


def test_json_keys_are_settings_keys_and_toml_tables_are_groups_both_reading_the_marker_as_one_value(
        cli, tmp_path, store):
    """JSON stays flat, as every earlier export was: an object under a key is its value (an old export's
    embedding.space imports as it was). TOML tables are groups; a `$value` table is one value."""
    (tmp_path / "hand.json").write_text(json.dumps(
        {"voice.speed": 1.2, "voice.pitch.base": 3, "obj.v": {"x": 1}, "obj.w": {"$value": {"y": 2}}}))
    (tmp_path / "hand.toml").write_text(
        '[voice]\nspeed = 1.2\npitch.base = 3\n\n[obj.v."$value"]\nx = 1\n\n[obj.w."$value"]\ny = 2\n')
    for name in ("hand.json", "hand.toml"):
        target = f"{store}-{name.split('.')[1]}"
        assert cli("settings", "import", str(tmp_path / name), "--store", target).exit_code == 0
        listed = {v["key"]: v["value"] for v in cli("settings", "list", "--store", target, "--json").json()}
        assert listed == {"voice.speed": 1.2, "voice.pitch.base": 3, "obj.v": {"x": 1}, "obj.w": {"y": 2}}, name


def test_a_key_given_twice_in_a_settings_file_is_refused(cli, tmp_path):
    path = tmp_path / "twice.toml"
    path.write_text('"voice.speed" = 1\n\n[voice]\nspeed = 2\n')
    result = cli("settings", "import", str(path))
    assert result.exit_code == ExitCode.INVALID_INPUT and "voice.speed" in result.stderr
    assert cli("settings", "list", "--json").json() == []


def test_toml_export_names_a_null_inside_an_object_value(cli):
    cli("settings", "set", "obj", '{"a": [1, null]}')
    result = cli("settings", "export", "--format", "toml")
    assert result.exit_code == ExitCode.INVALID_INPUT and "null" in result.stderr and "'obj'" in result.stderr


flat_files = st.dictionaries(keys, json_values, max_size=5).filter(
    lambda flat: not any(a != b and b.startswith(a + ".") for a in flat for b in flat))


def _without_null(value) -> bool:
    if isinstance(value, dict):
        return all(_without_null(v) for v in value.values())
    if isinstance(value, list):
        return all(_without_null(v) for v in value)
    return value is not None


@given(flat=flat_files)
def test_any_settings_round_trip_through_the_file_forms(flat):
    import tomllib

    import tomli_w

    as_json = json.loads(json.dumps(svc.to_file(flat)))
    assert svc.canonical(svc.from_file(as_json)) == svc.canonical(flat)
    if _without_null(flat):
        as_toml = tomllib.loads(tomli_w.dumps(svc.nest(svc.to_file(flat))))
        assert svc.canonical(svc.from_file(as_toml)) == svc.canonical(flat)


# -- retention values ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["bogus", "0d", "1.5", "true", '"180"', "[\"180d\"]"])
def test_a_retention_value_that_is_not_a_period_is_refused_when_set(cli, bad):
    result = cli("settings", "set", "retention.history", bad)
    assert result.exit_code == ExitCode.INVALID_INPUT
    first = result.stderr.splitlines()[0]
    assert first.startswith("error:") and "retention.history" in first and "180d" in first
    assert cli("settings", "get", "retention.history").exit_code == ExitCode.NOT_FOUND


@pytest.mark.parametrize("good", ["180d", "12w", "6m", "1y", "30"])
def test_retention_periods_the_retention_code_reads_are_accepted(cli, good):
    assert cli("settings", "set", "retention.notes", good).exit_code == 0


def test_an_unknown_retention_key_is_refused(cli):
    result = cli("settings", "set", "retention.histroy", "180d")
    assert result.exit_code == ExitCode.INVALID_INPUT and "retention.history" in result.stderr


def test_importing_a_retention_value_that_is_not_a_period_writes_nothing(cli, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"voice.speed": 1.2, "retention.notes": "forever"}))
    result = cli("settings", "import", str(path))
    assert result.exit_code == ExitCode.INVALID_INPUT and "retention.notes" in result.stderr
    assert cli("settings", "list", "--json").json() == []


def test_the_settings_tool_refuses_a_retention_value_that_is_not_a_period(cli):
    result = cli("tools", "call", "settings_set", "--args", '{"key": "retention.history", "value": "bogus"}')
    assert result.exit_code == ExitCode.INVALID_INPUT and "retention.history" in result.stderr


def test_reverting_to_a_retention_value_stored_before_validation_is_refused(cli, db, store):
    with db.cursor() as cur:
        svc._insert(cur, StoreRef(store).id(cur, create=True), "retention.history", "forever")
    cli("settings", "set", "retention.history", "90d")
    result = cli("settings", "revert", "retention.history", "--to", "1")
    assert result.exit_code == ExitCode.INVALID_INPUT and "retention.history" in result.stderr
    assert cli("settings", "get", "retention.history").stdout == "90d"
    assert cli("settings", "unset", "retention.history").exit_code == 0  # no policy is a valid policy


# -- revert to the active value -------------------------------------------------------------------------
def test_reverting_to_the_active_value_records_nothing(cli):
    for value in ("1.2", "1.5", "1.2"):
        cli("settings", "set", "voice.speed", value)
    human = cli("settings", "revert", "voice.speed", "--to", "1")
    assert human.exit_code == 0 and "unchanged" in human.stderr
    machine = cli("settings", "revert", "voice.speed", "--to", "1", "--json")
    assert machine.exit_code == 0
    assert machine.json() == {"key": "voice.speed", "version": 3, "value": 1.2, "changed": False}
    assert len(cli("settings", "history", "voice.speed", "--json").json()) == 3


def test_reverting_an_unset_key_to_a_deletion_records_nothing(cli):
    cli("settings", "set", "k", "1")
    cli("settings", "unset", "k")
    cli("settings", "set", "k", "2")
    cli("settings", "unset", "k")
    assert cli("settings", "revert", "k", "--to", "2", "--json").json()["changed"] is False
    assert len(cli("settings", "history", "k", "--json").json()) == 4


def test_the_revert_tool_says_when_nothing_changed(cli):
    cli("settings", "set", "voice.speed", "1.2")
    cli("settings", "set", "voice.speed", "1.2", "--force")
    result = cli("tools", "call", "settings_revert", "--args", '{"key": "voice.speed"}')
    assert result.exit_code == 0 and result.json()["changed"] is False and result.json()["version"] == 2


def test_a_forced_revert_records_the_active_value_again(db, store):
    ref = StoreRef(store)
    svc.set_value(db, ref, "voice.speed", 1.2)
    done = svc.revert(db, ref, "voice.speed", to_version=1, force=True)
    assert (done.version, done.changed) == (2, True)


def test_revert_force_through_the_cli_and_the_tool_records_the_active_value_again(cli, store):
    from ltm_cli import Memory
    from ltm_cli.tools import Caller, call

    assert cli("settings", "set", "voice.speed", "1.2").exit_code == 0
    unchanged = cli("settings", "revert", "voice.speed", "--to", "1", "--json")
    assert unchanged.exit_code == 0 and (unchanged.json()["version"], unchanged.json()["changed"]) == (1, False)
    forced = cli("settings", "revert", "voice.speed", "--to", "1", "--force", "--json")
    assert forced.exit_code == 0 and (forced.json()["version"], forced.json()["changed"]) == (2, True)
    with Memory.open(store) as memory:
        result = call(memory, "settings_revert", {"key": "voice.speed", "to_version": 1, "force": True},
                      Caller(name="agent")).data
    assert (result["version"], result["changed"]) == (3, True)


def test_a_value_that_looks_like_json_but_does_not_parse_is_stored_as_a_string_with_a_warning(cli):
    typo = cli("settings", "set", "a.b", '{"x":')
    assert typo.exit_code == 0 and "looks like JSON but does not parse" in typo.stderr
    assert cli("settings", "get", "a.b", "--json").json() == '{"x":'
    for args in (("a.c", '{"x": 1}'), ("a.d", "plain"), ("a.e", '{"x":', "--string")):
        assert "looks like JSON" not in cli("settings", "set", *args).stderr
