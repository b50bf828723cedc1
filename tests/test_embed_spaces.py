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
