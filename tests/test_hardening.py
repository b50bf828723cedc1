"""Hostile input, one behaviour per test: bounded resources, files that fail alone, right codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_ltm


@pytest.mark.parametrize("url", [
    "postgresql://ltm:hunter2secret@127.0.0.1:1/ltm",
    "postgresql://ltm@127.0.0.1:1/ltm?password=hunter2secret&sslmode=disable",
    "postgresql://ltm@127.0.0.1:1/ltm?sslpassword=hunter2secret&connect_timeout=2",
])
def test_no_password_form_is_ever_printed(cli, url):
    shown = cli("config", "show", "--json", env={"LTM_DATABASE_URL": url})
    assert shown.exit_code == 0 and "hunter2secret" not in shown.stdout and "****" in shown.stdout
    failed = cli("db", "status", env={"LTM_DATABASE_URL": url})
    assert failed.exit_code == 5 and "hunter2secret" not in failed.stdout + failed.stderr


# -- bounded resources -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("ingest", "-"), ("settings", "set", "k", "-"), ("history", "import", "-")])
def test_endless_standard_input_is_refused_at_the_limit(store, args):
    with open("/dev/zero", "rb") as zero:
        done = subprocess.run([sys.executable, "-m", "ltm_cli", *args], stdin=zero, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "LTM_MAX_INPUT_SIZE": "2MB"})
    assert done.returncode == 4 and "over the 2.0 MB input limit" in done.stderr


def test_a_file_over_the_size_limit_fails_alone(cli, tmp_path):
    (tmp_path / "big.txt").write_text("word " * 300_000)  # 1.5 MB
    (tmp_path / "small.txt").write_text("a small file about tomatoes")
    done = cli("ingest", str(tmp_path), "--max-file-size", "1MB", "--json")
    statuses = {Path(f["source"]).name: (f["status"], f["error"]) for f in done.json()["files"]}
    assert done.exit_code == 1 and statuses["small.txt"] == ("added", None)
    assert statuses["big.txt"][0] == "failed" and "over the 1.0 MB limit" in statuses["big.txt"][1]
    assert cli("ingest", str(tmp_path / "big.txt"), "--max-file-size", "2M").exit_code == 0
    assert cli("ingest", "x", "--max-file-size", "lots").exit_code == 4


# -- files that fail alone ---------------------------------------------------------------------------------
def test_fifos_links_loops_and_empty_files_in_a_folder_fail_or_skip_alone(cli, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "good.md").write_text("# Good\n\nThe good file about compilers.\n")
    os.mkfifo(folder / "pipe.txt")
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    (folder / "dangling.txt").symlink_to(folder / "nowhere.txt")
    (folder / "empty.txt").write_text("  \n\t\n")
    done = cli("ingest", str(folder), "--json")
    statuses = {Path(f["display"]).name: (f["status"], f["error"]) for f in done.json()["files"]}
    assert statuses["good.md"] == ("added", None)
    assert statuses["pipe.txt"][0] == "skipped" and "not a regular file" in statuses["pipe.txt"][1]
    assert statuses["loop.txt"] == ("failed", "symbolic link loop")
    assert statuses["dangling.txt"][0] == "failed" and "dangling" in statuses["dangling.txt"][1]
    assert statuses["empty.txt"][0] == "skipped" and "empty" in statuses["empty.txt"][1]
    assert done.exit_code == 1  # the loop and the dangling link failed; everything else went on


def test_an_empty_file_is_skipped_and_its_old_text_removed(cli, tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("Rotate the zebra keys every ninety days.")
    assert cli("ingest", str(doc)).exit_code == 0
    doc.write_text("\n   \n")
    done = cli("ingest", str(tmp_path))
    assert done.exit_code == 0 and "skipped" in done.stderr
    assert cli("search", "zebra keys", "--mode", "keyword", "--json").json() == []
    assert cli("docs", "list", "--json").json() == []


@pytest.mark.parametrize("args", [("ingest",), ("settings", "import"), ("history", "import")])
def test_naming_a_fifo_is_an_invalid_input_not_a_hang(cli, tmp_path, args):
    os.mkfifo(tmp_path / "pipe")
    done = run_ltm(*args, str(tmp_path / "pipe"), timeout=60)
    assert done.returncode == 4 and "not a regular file" in done.stderr


# -- right codes, right messages ---------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("search", "x", "-n", "1001"), ("history", "search", "x", "-n", "1001"),
                                  ("history", "list", "-n", "-1"), ("history", "search", "x", "-C", "-5"),
                                  ("search", "x", "-n", "0"), ("recall", "x", "--budget", "10"),
                                  ("docs", "list", "-n", "-3"), ("history", "conversations", "-n", "-2")])
def test_numeric_options_out_of_range_are_invalid_input(cli, args):
    done = cli(*args)
    assert done.exit_code == 4, done.stderr
    assert "database error" not in done.stderr


def test_large_limits_work(cli):
    cli("history", "add", "hello world", "-c", "c1")
    assert len(cli("search", "hello", "--kind", "history", "-n", "1000", "--json").json()) == 1


def test_reingesting_an_unchanged_tree_keeps_the_vector_index(cli, tmp_path):
    from sqlalchemy import text

    from ltm_cli import Memory

    for i in range(60):
        (tmp_path / f"f{i}.md").write_text(f"# File {i}\n\n" + f"topic{i} words " * 30)
    assert cli("ingest", str(tmp_path)).exit_code == 0

    def index_oid():  # the index of this store's space (other tests may have made other hash spaces)
        with Memory.open() as memory, memory.db.connect() as conn:
            e = memory.embedder
            return conn.execute(text("SELECT c.oid FROM pg_class c WHERE c.relname = (SELECT "
                                     "'embeddings_hnsw_space_' || id FROM embedding_spaces WHERE provider = :p "
                                     "AND model = :m AND dim = :d)"),
                                {"p": e.provider, "m": e.model, "d": e.dim}).scalar()

    before = index_oid()
    assert before is not None
    again = cli("ingest", str(tmp_path), "--json").json()
    assert {f["status"] for f in again["files"]} == {"unchanged"}
    assert index_oid() == before  # not dropped and rebuilt


def test_concurrent_ingests_of_one_new_file_report_what_each_did(store, tmp_path):
    doc = tmp_path / "shared.md"
    doc.write_text("# Shared\n\n" + "a paragraph about pelicans and their beaks. " * 200)
    procs = [subprocess.Popen([sys.executable, "-m", "ltm_cli", "ingest", str(doc), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    statuses = sorted(json.loads(p.communicate(timeout=120)[0])["files"][0]["status"] for p in procs)
    assert statuses == ["added", "unchanged", "unchanged"]
    assert len(run_ltm("docs", "list", "--json").stdout and json.loads(run_ltm("docs", "list", "--json").stdout)) == 1


BILLION_LAUGHS = "openapi: 3.0.0\na: &a [" + ",".join(['"lol"'] * 9) + "]\n" + "".join(
    f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))


def test_a_billion_laughs_yaml_fails_alone_and_fast(cli, tmp_path):
    (tmp_path / "laughs.yaml").write_text(BILLION_LAUGHS)
    (tmp_path / "spec.yaml").write_text(
        "openapi: 3.0.0\ninfo: {title: Pets, version: '1'}\ncomponents:\n  parameters:\n    limit: &limit\n"
        "      name: limit\n      in: query\npaths:\n  /pets:\n    get:\n      summary: List pets\n"
        "      parameters: [*limit]\n  /cats:\n    get:\n      summary: List cats\n      parameters: [*limit]\n")
    done = cli("ingest", str(tmp_path), "--json")
    statuses = {Path(f["source"]).name: (f["status"], f["error"]) for f in done.json()["files"]}
    assert statuses["spec.yaml"][0] == "added"  # aliases within reason are fine
    assert statuses["laughs.yaml"][0] == "failed" and "billion laughs" in statuses["laughs.yaml"][1]
    assert done.json()["seconds"] < 10


def test_a_missing_vector_index_shows_in_status_and_the_next_write_rebuilds_it(cli, tmp_path):
    from sqlalchemy import text

    from ltm_cli import Memory

    cli("history", "add", "hello there", "-c", "c1")
    space = next(s for s in cli("db", "status", "--json").json()["embedding_spaces"] if s["provider"] == "hash")
    assert space["index"] == "ok"
    with Memory.open() as memory, memory.db.connect() as conn:  # what a kill -9 during a bulk load leaves
        conn.execute(text(f"DROP INDEX embeddings_hnsw_space_{space['id']}"))
    status = cli("db", "status", "--json").json()["embedding_spaces"]
    assert next(s for s in status if s["id"] == space["id"])["index"] == "missing"
    assert "missing" in cli("db", "status").stdout
    cli("history", "add", "and again", "-c", "c1")
    status = cli("db", "status", "--json").json()["embedding_spaces"]
    assert next(s for s in status if s["id"] == space["id"])["index"] == "ok"


def test_token_counts_of_huge_texts_are_exact_and_bounded():
    from ltm_cli.chunking import _windows
    from ltm_cli.embedders.base import bert_tokenizer, count_tokens

    words = [f"word{i % 977} tokenisation{i % 13}" for i in range(40_000)]
    huge = " ".join(words)  # ~900 KB: counted in whitespace-cut slices
    exact = len(bert_tokenizer().encode(huge, add_special_tokens=False).ids)
    assert count_tokens(["short one", huge, "x" * 10]) == [2, exact, len(bert_tokenizer().encode("x" * 10).ids) - 2]
    windows = _windows(huge, 200)
    assert all(n <= 200 for _, n in windows) and sum(n for _, n in windows) >= exact - len(windows)
    assert windows[0][0].startswith("word0") and windows[-1][0].endswith(words[-1])


# -- found by bench/torture.py -----------------------------------------------------------------------------
@pytest.mark.parametrize("args, env", [
    (("history", "list", "-n", "99999999999999999999"), {}),
    (("search", "x", "--since", "0001-01-01"), {}),
    (("settings", "get", "k", "--at", "0001-01-01"), {}),
    (("search", "x"), {"LTM_EMBEDDING_DIMENSIONS": "0"}),
    (("search", "x"), {"LTM_EMBEDDING_DIMENSIONS": "100000"}),
    (("settings", "get", "k"), {"LTM_DATABASE_URL": "postgresql://[::1/x"}),
    (("tools", "call", "memory_search", "--args", '{"query": "a\\u0000b"}'), {}),
    (("tools", "call", "settings_get", "--args", "[" * 100_000), {}),
    (("history", "add", "hi", "-c", "x", "--tool", "t", "--args", "[" * 100_000), {}),
])
def test_bad_input_that_once_escaped_as_unexpected_errors_is_exit_4(cli, args, env):
    done = cli(*args, env=env)
    assert done.exit_code == 4, done.stderr
    assert "unexpected error" not in done.stderr and "--debug" not in done.stderr


def test_an_unknown_migration_is_not_found(cli):
    done = cli("migrate", "upgrade", "no-such-revision")
    assert done.exit_code == 3 and "no migration 'no-such-revision'" in done.stderr


def test_mcp_http_on_a_busy_port_says_so(store):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = run_ltm("mcp", "--http", f"127.0.0.1:{busy.getsockname()[1]}", timeout=60)
    assert done.returncode == 4 and "cannot listen" in done.stderr


def test_a_file_name_that_is_not_utf8_is_ingested_under_an_escaped_name(cli, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "w") as handle:
        handle.write("a note about espresso machines")
    done = cli("ingest", str(folder), "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json()["files"][0]["source"].endswith("caf\\xe9.txt")
    assert cli("ingest", str(folder), "--json").json()["files"][0]["status"] == "unchanged"


def test_usage_errors_are_one_line_with_a_hint_and_a_negative_value_is_told_to_follow_double_dash(cli):
    cases = [(("settings", "set", "audio.gain", "-3"), "No such option: -3", "goes after --"),
             (("search", "x", "--limit", "abc"), "Invalid value for '--limit'", "see 'ltm search --help'"),
             (("--bogus",), "No such option: --bogus", "see 'ltm --help'"),
             (("settingz",), "No such command 'settingz'", "see 'ltm --help'"),
             (("settings", "set"), "Missing argument", "see 'ltm settings set --help'")]
    for args, message, hint in cases:
        result = cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2, args
        assert len(lines) == 2 and lines[0].startswith("error: ") and message in lines[0], result.stderr
        assert lines[1].startswith("hint: ") and hint in lines[1]
        assert not any(ch in result.stderr for ch in "╭│╰"), "no boxed usage text"
    assert cli("settings", "set", "audio.gain", "--", "-3").exit_code == 0
    assert cli("settings", "get", "audio.gain", "--json").json() == -3


def test_every_time_flag_takes_a_period_back_from_now_as_forget_does(cli):
    assert cli("history", "add", "the build broke", "-c", "c1").exit_code == 0
    for args in (("search", "build", "--kind", "history", "--since", "2h"), ("history", "list", "--since", "7d"),
                 ("history", "prune", "--before", "180d", "--dry-run"), ("forget", "--before", "1y", "--dry-run")):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
    assert "the build broke" in cli("history", "list", "--since", "1h").stdout
    assert "the build broke" not in cli("history", "list", "--until", "1h").stdout  # said less than an hour ago
    bad = cli("search", "x", "--since", "7x")
    assert bad.exit_code == 4 and "invalid time '7x'" in bad.stderr and "7d" in bad.stderr


def test_help_paragraphs_are_reflowed_to_the_terminal_not_broken_where_the_source_wraps(cli):
    wide = cli("import", "--help", env={"COLUMNS": "200"}).stdout
    assert "Vectors in the file are reused when they were made by the configured embedder" in wide
    assert "Delete everything from one origin in one transaction: documents and their chunks" in \
        cli("--help", env={"COLUMNS": "200"}).stdout
