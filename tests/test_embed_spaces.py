"""Changing the embedding model without losing anything: the search warning, `ltm embed status` and
`ltm embed migrate` (resumable, batch by batch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ltm_cli.embedders.hashing import HashEmbedder
from ltm_cli.memory import Memory

NEW_SPACE = {"LTM_EMBEDDING_DIMENSIONS": "64"}  # the hash embedder at another size: another space


@pytest.fixture(autouse=True)
def _only_the_default_hash_space_after(store: str) -> None:
    """The session's database is shared: spaces these tests make (and their indexes) go with them, as other
    tests expect the hash embedder to have one space."""
    yield
    from sqlalchemy import text

    from ltm_cli.storage import vectors

    extra = "FROM embedding_spaces WHERE provider = 'hash' AND dim <> 384"
    with Memory.open(store) as memory, memory.db.connect() as conn:
        for space in conn.execute(text(f"SELECT id {extra}")).scalars().all():
            vectors.drop_index(conn, space)
        conn.execute(text(f"DELETE {extra}"))  # their vectors go too (ON DELETE CASCADE)


@pytest.fixture
def filled(cli, tmp_path: Path) -> None:
    """A store with one chunk, two messages and one note, embedded in the default hash space (384)."""
    doc = tmp_path / "router.md"
    doc.write_text("# Router\n\nHold the reset button for ten seconds to restore the router.\n")
    assert cli("ingest", str(doc)).exit_code == 0
    assert cli("history", "add", "the router lost its settings again", "-c", "c1").exit_code == 0
    assert cli("history", "add", "reset it with the pin", "-c", "c1", "--role", "assistant").exit_code == 0
    assert cli("note", "add", "the router pin is on its label", "--about", "router").exit_code == 0


def test_search_in_a_space_rows_lack_warns_on_stderr_and_keeps_json_an_array(cli, filled) -> None:
    result = cli("search", "router", "--kind", "all", "--json", env=NEW_SPACE)
    assert result.exit_code == 0
    assert isinstance(json.loads(result.stdout), list)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "4 of 4 stored texts (1 chunks, 2 messages, 1 notes)" in warnings[0]
    assert "64 dims" in warnings[0] and "ltm embed migrate" in warnings[0]


def test_warning_counts_only_the_kinds_searched(cli, filled) -> None:
    result = cli("search", "router", "--kind", "notes", env=NEW_SPACE)
    assert "1 of 1 stored texts (1 notes)" in result.stderr


def test_search_with_every_row_embedded_warns_nothing(cli, filled) -> None:
    result = cli("search", "router", "--kind", "all")
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_keyword_search_does_not_warn(cli, filled) -> None:
    result = cli("search", "router", "--kind", "all", "--mode", "keyword", env=NEW_SPACE)
    assert result.exit_code == 0 and "warning" not in result.stderr


def test_memory_search_tool_carries_the_warning(filled, store: str) -> None:
    from ltm_cli.tools import call

    with Memory.open(store, embedder=HashEmbedder(dim=64)) as memory:
        result = call(memory, "memory_search", {"query": "router", "kind": "all"})
    assert len(result.data["warnings"]) == 1 and "no vector" in result.data["warnings"][0]
    assert "warning:" in result.text
    with Memory.open(store) as memory:
        assert "warnings" not in call(memory, "memory_search", {"query": "router", "kind": "all"}).data


def test_embed_status_lists_each_space_with_its_counts(cli, filled) -> None:
    status = json.loads(cli("embed", "status", "--json", env=NEW_SPACE).stdout)
    assert status["totals"] == {"chunks": 1, "messages": 2, "notes": 1}
    assert status["missing"] == {"chunks": 1, "messages": 2, "notes": 1}
    assert status["fix"].startswith("ltm embed migrate")
    by_dim = {s["dim"]: s for s in status["spaces"]}
    assert by_dim[384]["active"] is False and (by_dim[384]["chunks"], by_dim[384]["messages"],
                                              by_dim[384]["notes"]) == (1, 2, 1)
    assert by_dim[64]["active"] is True and by_dim[64]["space_id"] is None  # never used yet
    human = cli("embed", "status", env=NEW_SPACE)
    assert human.exit_code == 0 and "have no vector" in human.stderr


def test_migrate_dry_run_counts_texts_and_tokens_and_embeds_nothing(cli, filled) -> None:
    plan = json.loads(cli("embed", "migrate", "--dry-run", "--json", env=NEW_SPACE).stdout)
    assert plan["rows"] == {"chunks": 1, "messages": 2, "notes": 1}
    assert plan["texts"] == 4 and plan["tokens"] > 0 and plan["computed"] == 0
    assert json.loads(cli("embed", "status", "--json", env=NEW_SPACE).stdout)["missing"]["messages"] == 2


def test_migrate_embeds_what_the_configured_space_lacks_and_search_stops_warning(cli, filled) -> None:
    done = json.loads(cli("embed", "migrate", "--json", env=NEW_SPACE).stdout)
    assert done["rows"] == {"chunks": 1, "messages": 2, "notes": 1} and done["computed"] == 4
    result = cli("search", "reset the router", "--kind", "all", "--json", env=NEW_SPACE)
    assert "warning" not in result.stderr
    assert any(hit["vector_rank"] is not None for hit in json.loads(result.stdout))
    again = json.loads(cli("embed", "migrate", "--json", env=NEW_SPACE).stdout)
    assert again["computed"] == 0 and sum(again["rows"].values()) == 0


def test_migrate_to_another_space_leaves_the_active_one_as_it_was(cli, filled) -> None:
    done = cli("embed", "migrate", "--to", "hash", "--dimensions", "32", "--json")
    assert json.loads(done.stdout)["computed"] == 4
    status = json.loads(cli("embed", "status", "--json").stdout)
    active = [s for s in status["spaces"] if s["active"]]
    assert [s["dim"] for s in active] == [384] and status["fix"] is None
    assert {s["dim"]: s["notes"] for s in status["spaces"]}[32] == 1
    assert "warning" not in cli("search", "router", "--kind", "all").stderr
    assert "warning" not in cli("search", "router", "--kind", "all", env={"LTM_EMBEDDING_DIMENSIONS": "32"}).stderr


def test_migrate_refuses_a_model_name_for_an_embedder_with_one_model(cli, filled) -> None:
    result = cli("embed", "migrate", "--to", "hash:other")
    assert result.exit_code != 0 and "one model" in result.stderr


class _DiesAfter(HashEmbedder):
    """The hash embedder in its 48-dim space, killed (as by kill -9) after `batches` embed calls."""

    def __init__(self, batches: int) -> None:
        super().__init__(dim=48)
        self.left = batches

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.left == 0:
            raise KeyboardInterrupt  # not an LtmError: nothing may catch it and carry on
        self.left -= 1
        return super().embed(texts)


def test_interrupted_migrate_keeps_its_committed_batches_and_a_rerun_finishes(filled, store: str) -> None:
    with Memory.open(store, embedder=_DiesAfter(2)) as memory, pytest.raises(KeyboardInterrupt):
        memory.embed_migrate(batch=1)
    with Memory.open(store, embedder=HashEmbedder(dim=48)) as memory:
        half = memory.embed_status()
        assert sum(half.missing.values()) == 2  # two batches of one row were committed before the kill
        rest = memory.embed_migrate(batch=1)
        assert rest.computed == 2
        assert sum(memory.embed_status().missing.values()) == 0
        hits = memory.search("reset the router", kind="all")
        assert hits.warnings == [] and any(h.vector_rank is not None for h in hits)


# -- switching the store's active space, and dropping old ones ---------------------------------------------
def _switch(cli, *args: str):
    return cli("embed", "switch", *args, "--json")


def test_switch_after_migrate_makes_search_use_the_new_space(cli, filled) -> None:
    assert cli("embed", "migrate", "--to", "hash", "--dimensions", "64").exit_code == 0
    done = _switch(cli, "hash", "--dimensions", "64", "--by", "tester")
    assert done.exit_code == 0 and json.loads(done.stdout)["value"]["dim"] == 64
    # Written now, this note has a vector in the 64-dim space only: a vector hit proves search used it.
    assert cli("note", "add", "the modem blinks amber when the firmware updates").exit_code == 0
    hits = json.loads(cli("search", "modem firmware amber", "--kind", "notes", "--mode", "vector", "--json").stdout)
    assert any("modem" in hit["text"] and hit["vector_rank"] is not None for hit in hits)
    status = json.loads(cli("embed", "status", "--json").stdout)
    assert [s["dim"] for s in status["spaces"] if s["active"]] == [64] and status["fix"] is None
    assert "embedding.space" in status["source"] and "tester" in status["source"]
    history = json.loads(cli("settings", "history", "embedding.space", "--json").stdout)
    assert history[-1]["author"] == "tester" and history[-1]["value"]["dim"] == 64


def test_the_store_setting_wins_over_the_configured_embedder(cli, filled, store: str) -> None:
    assert _switch(cli, "hash", "--dimensions", "64", "--force").exit_code == 0
    with Memory.open(store, embedder="hash", embedding_dimensions=96) as memory:
        assert memory.embedder.dim == 64 and "embedding.space" in (memory.embedder_source or "")
    with Memory.open(store, embedder=HashEmbedder(dim=96)) as memory:  # an instance given by the caller wins
        assert memory.embedder.dim == 96


def test_switch_back_returns_to_the_previous_space(cli, filled) -> None:
    assert cli("embed", "migrate", "--to", "hash", "--dimensions", "64").exit_code == 0
    assert _switch(cli, "hash", "--dimensions", "64").exit_code == 0
    back = _switch(cli, "--back")
    assert back.exit_code == 0 and "384 dims" in json.loads(back.stdout)["space"]
    status = json.loads(cli("embed", "status", "--json").stdout)
    assert [s["dim"] for s in status["spaces"] if s["active"]] == [384]
    assert _switch(cli, "hash", "--dimensions", "64").exit_code == 0
    assert _switch(cli, "hash", "--dimensions", "32", "--force").exit_code == 0
    again = _switch(cli, "--back")
    assert again.exit_code == 0 and json.loads(again.stdout)["value"]["dim"] == 64


def test_switch_is_refused_without_vectors_and_allowed_with_force(cli, filled) -> None:
    refused = cli("embed", "switch", "hash", "--dimensions", "64")
    assert refused.exit_code == 7
    assert "4 row(s)" in refused.stderr and "ltm embed migrate --to hash --dimensions 64" in refused.stderr
    assert json.loads(cli("embed", "status", "--json").stdout)["active"].endswith("(384 dims)")
    forced = _switch(cli, "hash", "--dimensions", "64", "--force")
    assert forced.exit_code == 0 and sum(json.loads(forced.stdout)["lacking"].values()) == 4
    assert json.loads(cli("embed", "status", "--json").stdout)["active"].endswith("(64 dims)")


def test_drop_refuses_the_active_space_and_drops_an_old_one(cli, filled, store: str) -> None:
    from sqlalchemy import text

    from ltm_cli.storage import vectors

    assert cli("embed", "migrate", "--to", "hash", "--dimensions", "40").exit_code == 0
    assert _switch(cli, "hash", "--dimensions", "40").exit_code == 0
    refused = cli("embed", "drop", "hash:feature-hash-v1", "--dimensions", "40", "--yes")
    assert refused.exit_code == 7 and store in refused.stderr
    assert _switch(cli, "--back").exit_code == 0
    with Memory.open(store) as memory, memory.db.connect() as conn:
        space = vectors.find_space(conn, "hash", "feature-hash-v1", 40)
        assert vectors.has_index(conn, space)
    assert cli("embed", "drop", str(space)).exit_code == 4  # no terminal to ask on, and no --yes
    dropped = cli("embed", "drop", str(space), "--yes", "--json")
    assert dropped.exit_code == 0 and json.loads(dropped.stdout)["vectors"] == 4
    with Memory.open(store) as memory, memory.db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM embeddings WHERE space_id = :s"), {"s": space}).scalar() == 0
        assert not vectors.has_index(conn, space)
    assert cli("embed", "drop", "hash", "--dimensions", "384", "--yes").exit_code == 7  # the configured one


def test_drop_refuses_a_space_holding_the_vectors_of_a_store_that_is_not_pinned_to_one(cli, store, tmp_path):
    """A store without an embedding.space setting searches whatever embedder the configuration names. Run with
    another one configured (LTM_EMBEDDER, LTM_EMBEDDING_DIMENSIONS), `embed drop` counted the store's space as
    unused and deleted every vector the store had."""
    (tmp_path / "a.md").write_text("# Pinned?\n\nNo: this store never switched spaces.\n")
    own = {"LTM_EMBEDDING_DIMENSIONS": "48"}
    assert cli("ingest", str(tmp_path), env=own).exit_code == 0
    assert cli("settings", "get", "embedding.space", env=own).exit_code == 3  # not pinned
    other = {"LTM_EMBEDDING_DIMENSIONS": "64"}
    refused = cli("embed", "drop", "hash:feature-hash-v1", "--dimensions", "48", "--yes", env=other)
    assert refused.exit_code == 7 and store in refused.stderr and "embed switch" in refused.stderr
    assert cli("search", "pinned", "--mode", "vector", "--json", env=own).json()  # its vectors are still there


def test_an_unknown_embedder_with_a_model_is_named_unknown(cli):
    result = cli("embed", "migrate", "--to", "bogus:some-model")
    assert result.exit_code == 4 and "unknown embedder 'bogus'" in result.stderr
