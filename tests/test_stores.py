"""Stores as a whole: list with counts, create, rename, copy and remove, through the real CLI."""

from __future__ import annotations

import json

import psycopg2
import pytest

from ltm_cli.storage.server import EmbeddedServer


def _fill(cli, tmp_path) -> dict:
    """A store with a bit of everything: settings history, two conversations, two documents, a note chain."""
    assert cli("settings", "set", "voice.speed", "1.2", "--note", "faster").exit_code == 0
    assert cli("settings", "set", "voice.speed", "1.5").exit_code == 0
    assert cli("settings", "set", "voice.name", "Ada", "--string").exit_code == 0
    assert cli("settings", "unset", "voice.name").exit_code == 0
    first = cli("history", "add", "Reset the router with the pin", "-c", "ops-1", "--json").json()
    cli("history", "add", "That worked", "-c", "ops-1", "--role", "assistant", "--outcome", "success",
        "--note", "pin reset", "--at", "2024-05-01T10:00:00Z")
    unnamed = cli("history", "add", "A conversation ltm named", "--new", "--title", "no id", "--json").json()
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "manual.md").write_text("# Manual\n\nHold the pin for ten seconds.\n\n## More\n\nThen wait.\n")
    (tmp_path / "docs" / "notes.txt").write_text("Routers reboot in about a minute.\n")
    assert cli("ingest", str(tmp_path / "docs"), "--tag", "manual").exit_code == 0
    doc_id = cli("docs", "list", "--json").json()[0]["id"]
    old = cli("note", "add", "Router resets need the pin.", "--about", "router", "--source",
              str(first["message_id"]), "--doc", str(doc_id), "--json").json()["note"]["id"]
    assert cli("note", "supersede", str(old), "Router resets need the pin held ten seconds.").exit_code == 0
    gone = cli("note", "add", "The user is in Paris.", "--about", "user", "--json").json()["note"]["id"]
    assert cli("note", "forget", str(gone), "--reason", "moved").exit_code == 0
    return {"message": first["message_id"], "unnamed": unnamed["conversation_id"], "doc": doc_id}


def _snapshot(cli, name: str) -> dict:
    """What a user sees of a store, minus the ids the database hands out."""
    def run(*args: str):
        result = cli("--store", name, *args)
        assert result.exit_code == 0, result.stderr
        return result

    notes = run("note", "list", "--all", "--json").json()
    docs = run("docs", "list", "--json").json()
    return {
        "settings": run("settings", "history", "--json").json(),
        "export": [json.loads(line) for line in run("history", "export").stdout.splitlines()],
        "docs": [{k: v for k, v in d.items() if k != "id"} for d in docs],
        "notes": [{k: v for k, v in n.items() if k not in ("id", "superseded_by", "source_messages",
                                                            "source_documents")} for n in notes],
        "chains": [n["superseded_by"] is not None for n in notes],
    }


def _store(cli, name: str) -> dict | None:
    return next((s for s in cli("store", "list", "--json").json() if s["name"] == name), None)


def _sql(ltm_home, sql: str, params: tuple = ()) -> list[tuple]:
    server = EmbeddedServer(ltm_home)
    conn = psycopg2.connect(host=str(server.socket_dir), port=server.port, user="postgres", dbname="ltm")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def test_list_shows_counts_per_kind_in_a_table_and_as_json(cli, store, tmp_path):
    _fill(cli, tmp_path)
    counts = _store(cli, store)
    assert {k: counts[k] for k in ("settings", "conversations", "messages", "documents", "chunks", "notes")} == \
        {"settings": 2, "conversations": 2, "messages": 3, "documents": 2, "chunks": counts["chunks"], "notes": 1}
    assert counts["chunks"] >= 2 and counts["created_at"]
    table = cli("store", "list")
    assert table.exit_code == 0
    assert "conversations" in table.stdout and store in table.stdout


def test_create_makes_an_empty_store_and_refuses_an_existing_one(cli, store):
    made = cli("store", "create", store, "--json")
    assert made.exit_code == 0 and made.json()["messages"] == 0
    assert _store(cli, store)["name"] == store
    again = cli("store", "create", store)
    assert again.exit_code == 7 and "already exists" in again.stderr


@pytest.mark.parametrize("command", [("create", "bad name"), ("create", ".hidden"), ("copy", "a", "no/slash"),
                                     ("rename", "a", "b c"), ("rm", "x" * 65, "--yes")])
def test_invalid_store_names_are_exit_4(cli, command):
    result = cli("store", *command)
    assert result.exit_code == 4 and "invalid store name" in result.stderr


def test_unknown_stores_are_exit_3(cli, store):
    for command in (("rename", store, f"{store}-b"), ("copy", store, f"{store}-b"), ("rm", store, "--yes")):
        result = cli("store", *command)
        assert result.exit_code == 3, command
        assert f"no store {store!r}" in result.stderr
    assert _store(cli, f"{store}-b") is None  # a failed copy leaves nothing behind


def test_copy_duplicates_every_row_and_reuses_the_vectors(cli, store, tmp_path, ltm_home):
    made = _fill(cli, tmp_path)
    target = f"{store}-copy"
    done = cli("store", "copy", store, target, "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json()["source"] == store and done.json()["target"]["name"] == target
    assert _snapshot(cli, target) == _snapshot(cli, store)
    source_counts, copy_counts = _store(cli, store), _store(cli, target)
    assert {k: v for k, v in copy_counts.items() if k not in ("name", "created_at")} == \
        {k: v for k, v in source_counts.items() if k not in ("name", "created_at")}
    # The conversation ltm named is found by the same id in the copy.
    shown = cli("--store", target, "history", "show", made["unnamed"], "--json")
    assert shown.exit_code == 0 and shown.json()["conversation"]["id"] == made["unnamed"]
    # Same hashes, fresh rows; nothing embedded again (the vector count does not move).
    ids = dict(_sql(ltm_home, "SELECT name, id FROM stores WHERE name IN (%s, %s)", (store, target)))
    for table in ("messages", "chunks", "notes"):
        src, dst = (_sql(ltm_home, f"SELECT array_agg(embed_hash ORDER BY embed_hash) FROM {table} "
                                   "WHERE store_id = %s", (ids[n],))[0][0] for n in (store, target))
        assert src == dst and src
    assert not _sql(ltm_home, "SELECT 1 FROM messages a JOIN messages b ON a.id = b.id "
                              "WHERE a.store_id = %s AND b.store_id = %s", (ids[store], ids[target]))
    # Note chains and sources point inside the copy.
    notes = cli("--store", target, "note", "list", "--all", "--json").json()
    copy_ids = {n["id"] for n in notes}
    assert all(n["superseded_by"] in copy_ids for n in notes if n["superseded_by"] is not None)
    sourced = next(n for n in notes if n["source_messages"])
    copied_message = _sql(ltm_home, "SELECT store_id, content FROM messages WHERE id = %s",
                          (sourced["source_messages"][0],))
    assert copied_message == [(ids[target], "Reset the router with the pin")]
    assert sourced["source_documents"][0] in {d["id"] for d in cli("--store", target, "docs", "list", "--json").json()}
    # The copy is independent: a write to it leaves the source alone.
    assert cli("--store", target, "settings", "set", "voice.speed", "2").exit_code == 0
    assert cli("--store", store, "settings", "get", "voice.speed").stdout.strip() == "1.5"


def test_copy_onto_an_existing_store_is_a_conflict(cli, store):
    cli("settings", "set", "a", "1")
    cli("store", "create", f"{store}-b")
    result = cli("store", "copy", store, f"{store}-b")
    assert result.exit_code == 7 and "already exists" in result.stderr
    assert _store(cli, f"{store}-b")["settings"] == 0
    assert cli("store", "copy", store, store).exit_code == 7


def test_rename_moves_everything_to_the_new_name(cli, store, tmp_path):
    _fill(cli, tmp_path)
    before = _snapshot(cli, store)
    new = f"{store}-new"
    done = cli("store", "rename", store, new, "--json")
    assert done.exit_code == 0 and done.json() == {"old": store, "new": new, "replaced": None}
    assert _store(cli, store) is None
    assert _snapshot(cli, new) == before
    assert cli("store", "rename", new, new).exit_code == 4


def test_rename_onto_an_existing_store_needs_yes_and_replaces_it(cli, store):
    cli("settings", "set", "who", "old", "--string")
    other = f"{store}-b"
    cli("--store", other, "settings", "set", "who", "other", "--string")
    cli("--store", other, "history", "add", "hello", "-c", "c1")
    refused = cli("store", "rename", store, other)  # no terminal under CliRunner
    assert refused.exit_code == 4 and "add --yes" in refused.stderr
    assert _store(cli, store) is not None and _store(cli, other)["messages"] == 1
    done = cli("store", "rename", store, other, "--yes", "--json")
    assert done.exit_code == 0
    assert done.json()["replaced"]["name"] == other and done.json()["replaced"]["messages"] == 1
    assert _store(cli, store) is None and _store(cli, other)["messages"] == 0
    assert cli("--store", other, "settings", "get", "who").stdout.strip() == "old"


def test_rm_needs_yes_and_deletes_everything_in_the_store(cli, store, tmp_path, ltm_home):
    _fill(cli, tmp_path)
    sid = _sql(ltm_home, "SELECT id FROM stores WHERE name = %s", (store,))[0][0]
    refused = cli("store", "rm", store)
    assert refused.exit_code == 4 and "add --yes" in refused.stderr and _store(cli, store) is not None
    done = cli("store", "rm", store, "--yes")
    assert done.exit_code == 0 and "ltm db gc" in done.stderr
    assert _store(cli, store) is None
    for table in ("settings", "conversations", "messages", "documents", "chunks", "notes"):
        assert _sql(ltm_home, f"SELECT count(*) FROM {table} WHERE store_id = %s", (sid,)) == [(0,)], table
    assert cli("store", "rm", store, "--yes").exit_code == 3


def test_rm_keeps_vectors_a_copy_still_uses_until_gc_finds_them_unused(cli, store, tmp_path, ltm_home):
    (tmp_path / "only.txt").write_text("A sentence nobody else in the test suite ever writes: quokka ledger.\n")
    assert cli("ingest", str(tmp_path / "only.txt")).exit_code == 0
    hashes = "SELECT count(*) FROM embeddings e JOIN chunks k ON k.embed_hash = e.content_hash WHERE k.text LIKE %s"
    assert cli("store", "copy", store, f"{store}-b").exit_code == 0
    assert cli("store", "rm", store, "--yes").exit_code == 0
    assert cli("db", "gc").exit_code == 0
    assert _sql(ltm_home, hashes, ("%quokka ledger%",)) == [(1,)]  # the copy still uses it
    assert cli("store", "rm", f"{store}-b", "--yes", "--json").json()["store"]["chunks"] == 1
    assert cli("db", "gc").exit_code == 0
    unused = ("SELECT count(*) FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM chunks k "
              "WHERE k.embed_hash = e.content_hash) AND NOT EXISTS (SELECT 1 FROM messages m "
              "WHERE m.embed_hash = e.content_hash) AND NOT EXISTS (SELECT 1 FROM notes n "
              "WHERE n.embed_hash = e.content_hash)")
    assert _sql(ltm_home, unused) == [(0,)]


def test_memory_stores_is_the_same_api_for_python(store):
    from ltm_cli import Memory
    from ltm_cli.errors import ConflictError, NotFoundError

    with Memory.open(store) as memory:
        memory.settings.set("k", 1)
        assert memory.stores.get(store).settings == 1
        copied = memory.stores.copy(store, f"{store}-b")
        assert copied.target.settings == 1
        with pytest.raises(ConflictError):
            memory.stores.rename(f"{store}-b", store)
        with pytest.raises(NotFoundError):
            memory.stores.rm(f"{store}-nope")
        assert memory.stores.rm(f"{store}-b").store.name == f"{store}-b"


def test_reading_a_store_that_does_not_exist_warns_instead_of_looking_empty(cli):
    assert cli("settings", "set", "a.b", "1").exit_code == 0  # the fixture's store exists
    assert "does not exist" not in cli("settings", "list").stderr
    for args in (("docs", "list"), ("history", "list"), ("history", "conversations"), ("note", "list"),
                 ("settings", "list"), ("forget", "--tag", "x", "--yes")):
        result = cli("--store", "no-such-store-typo", *args)
        assert result.exit_code == 0, (args, result.stderr)
        assert "store 'no-such-store-typo' does not exist" in result.stderr, args
    assert "no-such-store-typo" not in cli("store", "list").stdout  # reading made nothing
