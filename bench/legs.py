"""What the fusion benchmarks read beside `Memory.search`: each retriever's own ranking, and what rows score as."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ltm_cli import Memory
    from ltm_cli.services.filters import Filters
    from ltm_cli.services.fusion import Legs
    from ltm_cli.storage.engine import Database


def leg_results(memory: Memory, query: str, *, filters: Filters | None = None, k: int = 100) -> Legs:
    """Each retriever's own ranking, before fusion and feedback, over the memory's store."""
    from ltm_cli.services.filters import Filters
    from ltm_cli.services.search import filter_scopes, leg_rankings
    from ltm_cli.storage import vectors

    filters = filters or Filters()
    embedder = memory.embedder
    with memory.db.connect() as conn:
        sid = memory.store.id(conn, create=False)
        if sid is None:
            return {"vector": [], "keyword": []}
        space = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim)
        literal = vectors.vector_literal(embedder.embed([query])[0])
        legs = leg_rankings(conn, filter_scopes(conn, filters.kinds(), filters, sid), sid, space, embedder.dim,
                            literal, query, k)
    return {"vector": legs.get("vector", []), "keyword": legs.get("keyword", [])}


def row_keys(db: Database, kind: str, ids: Sequence[int]) -> dict[int, Any]:
    """chunk id -> document source, or message id -> its metadata (LoCoMo's dia_id): what benchmarks score
    against."""
    from sqlalchemy import text

    with db.connect() as conn:
        if kind == "docs":
            rows = conn.execute(text("SELECT c.id, d.source FROM chunks c JOIN documents d ON d.id = c.document_id "
                                     "WHERE c.id = ANY(:ids)"), {"ids": list(ids)}).all()
            return {r.id: r.source for r in rows}
        rows = conn.execute(text("SELECT m.id, m.metadata FROM messages m WHERE m.id = ANY(:ids)"),
                            {"ids": list(ids)}).all()
        return {r.id: r.metadata for r in rows}
