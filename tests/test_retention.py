"""Forgetting: ingest --sync, `ltm forget` per origin, retention periods applied by `ltm db gc`."""

from __future__ import annotations

import datetime as dt

import pytest

from ltm_cli.errors import InvalidInputError
from ltm_cli.memory import Memory
from ltm_cli.services.retention import cutoff, parse_duration


def _sources(cli) -> list[str]:
    return [d["source"].rsplit("/", 1)[-1] for d in cli("docs", "list", "--json").json()]


def _tree(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "alpha.md").write_text("# Alpha\n\nThe alpha file talks about aardvarks and anteaters.\n")
    (folder / "beta.md").write_text("# Beta\n\nThe beta file talks about bees and beetles.\n")
    (folder / "gamma.md").write_text("# Gamma\n\nThe gamma file talks about gazelles.\n")
    return folder


def _sql(store: str, sql: str, **params) -> None:
    from sqlalchemy import text

    with Memory.open(store) as memory, memory.db.connect() as conn:
        conn.execute(text(sql), params)


# -- ingest --sync ------------------------------------------------------------------------------------
def test_sync_removes_documents_whose_files_are_gone_after_a_dry_run_lists_them(cli, tmp_path):
    folder = _tree(tmp_path)
    other = tmp_path / "elsewhere.md"
    other.write_text("# Elsewhere\n\nNot under the synced folder.\n")
    assert cli("ingest", str(folder), str(other)).exit_code == 0
    (folder / "beta.md").unlink()
    other.unlink()
    dry = cli("ingest", "--sync", "--dry-run", str(folder), "--json")
    assert dry.exit_code == 0, dry.stderr
    assert [s.rsplit("/", 1)[-1] for s in dry.json()["removed"]] == ["beta.md"]
    assert "beta.md" in _sources(cli)
    human = cli("ingest", "--sync", str(folder))
    assert human.exit_code == 0 and "1 removed" in human.stderr and "beta.md" in human.stderr
    assert sorted(_sources(cli)) == ["alpha.md", "elsewhere.md", "gamma.md"]  # outside the folder: kept


def test_a_renamed_file_reuses_its_vectors_and_its_old_document_goes(cli, tmp_path):
    folder = _tree(tmp_path)
    cli("ingest", str(folder))
    (folder / "alpha.md").rename(folder / "renamed.md")
    done = cli("ingest", "--sync", str(folder), "--json").json()
    assert done["embedded"] == 0 and done["cached"] > 0
    assert [s.rsplit("/", 1)[-1] for s in done["removed"]] == ["alpha.md"]
    assert sorted(_sources(cli)) == ["beta.md", "gamma.md", "renamed.md"]


def test_sync_keeps_files_that_exist_but_were_not_read_and_needs_a_directory(cli, tmp_path):
    folder = _tree(tmp_path)
    cli("ingest", str(folder))
    done = cli("ingest", "--sync", str(folder), "--exclude", "gamma.md", "--json").json()
    assert done["removed"] == []
    refused = cli("ingest", "--sync", str(folder / "alpha.md"))
    assert refused.exit_code == 4 and "--sync needs a directory" in refused.stderr


# -- ltm forget ---------------------------------------------------------------------------------------
def test_forget_source_lists_first_refuses_without_yes_then_removes_and_collects_vectors(cli, tmp_path):
    folder = _tree(tmp_path)
    (folder / "alpha.md").write_text(f"# Alpha\n\nText no other test has: {tmp_path.name}.\n")  # vectors are
    cli("ingest", str(folder))  # shared by every store, so only text of its own frees one
    dry = cli("forget", "--source", str(folder / "al*"), "--dry-run", "--json").json()
    assert [d["source"].rsplit("/", 1)[-1] for d in dry["documents"]] == ["alpha.md"] and dry["dry_run"]
    refused = cli("forget", "--source", str(folder / "al*"))
    assert refused.exit_code == 4 and "alpha.md" in refused.stderr and "--yes" in refused.stderr
    assert "alpha.md" in _sources(cli)
    done = cli("forget", "--source", str(folder / "al*"), "--yes", "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json()["vectors"] >= 1 and done.json()["gc_refused"] is None
    assert sorted(_sources(cli)) == ["beta.md", "gamma.md"]


def test_forget_source_takes_a_relative_glob(cli, tmp_path, monkeypatch):
    folder = _tree(tmp_path)
    cli("ingest", str(folder))
    monkeypatch.chdir(tmp_path)
    assert cli("forget", "--source", "notes/*", "--yes").exit_code == 0
    assert _sources(cli) == []


def test_forget_conversation_removes_its_turns_and_the_notes_drawn_from_them(cli):
    first = cli("history", "add", "-c", "c1", "I prefer dark mode", "--json").json()
    cli("history", "add", "-c", "c2", "something else entirely")
    cli("note", "add", "The user prefers dark mode.", "--source", str(first["message_id"]))
    cli("note", "add", "Unrelated standing fact.")
    done = cli("forget", "--conversation", "c1", "--yes", "--json").json()
    assert [c["id"] for c in done["conversations"]] == ["c1"]
    assert [n["why"] for n in done["notes"]] == ["derived"]
    assert [c["id"] for c in cli("history", "conversations", "--json").json()] == ["c2"]
    assert [n["text"] for n in cli("note", "list", "--json").json()] == ["Unrelated standing fact."]
    assert cli("forget", "--conversation", "nope", "--yes").exit_code == 3


def test_forget_before_takes_conversations_whose_last_turn_is_older(cli):
    cli("history", "add", "-c", "old", "ancient turn", "--at", "2020-01-01T00:00:00Z")
    cli("history", "add", "-c", "mixed", "old start", "--at", "2020-01-01T00:00:00Z")
    cli("history", "add", "-c", "mixed", "recent end")
    dry = cli("forget", "--before", "2021-01-01", "--dry-run", "--json").json()
    assert [c["id"] for c in dry["conversations"]] == ["old"]
    assert [c["id"] for c in cli("forget", "--before", "180d", "--dry-run", "--json").json()["conversations"]] \
        == ["old"]
    assert cli("forget", "--before", "2021-01-01", "--yes").exit_code == 0
    assert [c["id"] for c in cli("history", "conversations", "--json").json()] == ["mixed"]


def test_forget_tag_takes_documents_and_notes_with_it(cli, tmp_path):
    folder = _tree(tmp_path)
    cli("ingest", str(folder / "alpha.md"), "--tag", "secret")
    cli("ingest", str(folder / "beta.md"))
    cli("note", "add", "A secret fact.", "--tag", "secret")
    cli("note", "add", "A public fact.")
    done = cli("forget", "--tag", "secret", "--yes")
    assert done.exit_code == 0 and "1 document(s)" in done.stderr and "1 note(s)" in done.stderr
    assert _sources(cli) == ["beta.md"]
    assert [n["text"] for n in cli("note", "list", "--json").json()] == ["A public fact."]


def test_forget_needs_an_origin_and_says_when_nothing_matches(cli):
    assert cli("forget").exit_code == 4
    nothing = cli("forget", "--tag", "absent")
    assert nothing.exit_code == 0 and "nothing to forget" in nothing.stderr


# -- retention ----------------------------------------------------------------------------------------
def test_durations():
    assert parse_duration("180d") == dt.timedelta(days=180)
    assert parse_duration("12w") == dt.timedelta(weeks=12)
    assert parse_duration("6m") == dt.timedelta(days=180)
    assert parse_duration("1Y") == dt.timedelta(days=365)
    assert parse_duration(30) == dt.timedelta(days=30)
    for bad in ("0d", "soon", "3h", "", True, 1.5):
        with pytest.raises(InvalidInputError):
            parse_duration(bad)
    now = dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    assert cutoff("1m", now=now) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_gc_applies_each_stores_retention_and_collects_what_it_frees(cli, store):
    cli("history", "add", "-c", "old", f"a very old turn of {store}", "--at", "2020-01-01T00:00:00Z")
    cli("history", "add", "-c", "new", "a fresh turn")
    old_note = cli("note", "add", f"Closed long ago in {store}.", "--json").json()["note"]["id"]
    recent_note = cli("note", "add", "Closed just now.", "--json").json()["note"]["id"]
    cli("note", "add", "Still believed.")
    cli("note", "forget", str(old_note), "--reason", "wrong")
    cli("note", "forget", str(recent_note), "--reason", "wrong")
    _sql(store, "UPDATE notes SET valid_until = now() - interval '400 days' WHERE id = :i", i=old_note)
    other = f"{store}-keeps"
    cli("history", "add", "-c", "old", "old but kept", "--at", "2020-01-01T00:00:00Z", "--store", other)
    cli("settings", "set", "retention.history", "180d")
    cli("settings", "set", "retention.notes", "1y")

    dry = cli("db", "gc", "--dry-run", "--json").json()
    mine = {e["store"]: e for e in dry["retention"]}[store]
    assert (mine["conversations"], mine["notes"]) == (1, 1) and other not in {e["store"] for e in dry["retention"]}
    assert dry["vectors"] >= 2  # the expired turn's and note's vectors, counted though rolled back
    assert len(cli("history", "conversations", "--json").json()) == 2

    human = cli("db", "gc")
    assert human.exit_code == 0 and f"store {store} (retention history 180d, notes 1y)" in human.stderr
    assert [c["id"] for c in cli("history", "conversations", "--json").json()] == ["new"]
    assert sorted(n["text"] for n in cli("note", "list", "--all", "--json").json()) == \
        ["Closed just now.", "Still believed."]
    assert [c["id"] for c in cli("history", "conversations", "--store", other, "--json").json()] == ["old"]


def test_gc_leaves_a_store_whose_retention_is_not_a_period_whole_and_says_so(cli, store):
    cli("history", "add", "-c", "old", "a very old turn", "--at", "2020-01-01T00:00:00Z")
    # `settings set` refuses such a value now; one stored before it did must still leave the store whole
    _sql(store, "INSERT INTO settings (store_id, key, version, value) "
                "SELECT id, 'retention.history', 1, '\"forever\"' FROM stores WHERE name = :n", n=store)
    done = cli("db", "gc")
    assert done.exit_code == 0 and "retention not applied: retention.history: 'forever'" in done.stderr
    assert len(cli("history", "conversations", "--json").json()) == 1
    cli("settings", "unset", "retention.history")  # gc runs over every store: later tests need not see it


def test_status_shows_each_stores_retention(cli, store):
    cli("settings", "set", "retention.history", "180d")
    cli("settings", "set", "retention.notes", "12w")
    stores = {s["name"]: s for s in cli("db", "status", "--json").json()["stores"]}
    assert stores[store]["retention"] == {"history": "180d", "notes": "12w"}
    human = cli("db", "status")
    assert "history 180d, notes 12w" in human.stdout


def test_sync_names_a_directory_that_does_not_exist_and_removes_nothing(cli, tmp_path):
    (tmp_path / "a.md").write_text("# A\n\nkept text\n")
    assert cli("ingest", str(tmp_path)).exit_code == 0
    result = cli("ingest", str(tmp_path / "gone"), "--sync")
    assert result.exit_code == 4 and f"no such directory: {tmp_path / 'gone'}" in result.stderr
    assert len(cli("docs", "list", "--json").json()) == 1
