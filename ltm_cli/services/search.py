"""Hybrid retrieval over reference chunks: pgvector cosine + full-text, fused by reciprocal rank."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError
from ltm_cli.storage import vectors
from ltm_cli.storage.models import TS_CONFIG
from ltm_cli.storage.stores import store_id

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

MODES = ("hybrid", "vector", "keyword")
RRF_K = 60
EF_SEARCH = 100


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    chunk_id: int
    document_id: int
    source: str
    title: str | None
    heading: str | None
    location: dict[str, Any]
    text: str
    snippet: str
    vector_rank: int | None = None
    vector_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    tags: list[str] = field(default_factory=list)
    kind: str = "docs"


# OR of the query's lexemes: natural-language questions rarely have every word in one passage.
_OR_QUERY = (f"(SELECT CASE WHEN count(*) = 0 THEN NULL ELSE string_agg(quote_literal(l), ' | ')::tsquery END "
             f"FROM unnest(tsvector_to_array(to_tsvector('{TS_CONFIG}'::regconfig, :query))) AS l)")


def _vector_leg(conn: Connection, space_id: int, dim: int, store: int, qvec: str, k: int) -> list[tuple[int, float]]:
    from sqlalchemy import text

    conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}"))
    conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    rows = conn.execute(text(f"""
        SELECT c.id, e.embedding::halfvec({dim}) <=> CAST(:q AS halfvec({dim})) AS distance
        FROM embeddings e JOIN chunks c ON c.embed_hash = e.content_hash
        WHERE e.space_id = {int(space_id)} AND c.store_id = :store
        ORDER BY e.embedding::halfvec({dim}) <=> CAST(:q AS halfvec({dim}))
        LIMIT :k"""), {"q": qvec, "store": store, "k": k})
    return [(r.id, 1.0 - float(r.distance)) for r in rows]


def _keyword_leg(conn: Connection, store: int, query: str, k: int) -> list[tuple[int, float]]:
    from sqlalchemy import text

    rows = conn.execute(text(f"""
        WITH q AS (SELECT {_OR_QUERY} AS tsq)
        SELECT c.id, ts_rank_cd(c.tsv, q.tsq, 1) AS score
        FROM chunks c, q
        WHERE q.tsq IS NOT NULL AND c.store_id = :store AND c.tsv @@ q.tsq
        ORDER BY score DESC, c.id
        LIMIT :k"""), {"query": query, "store": store, "k": k})
    return [(r.id, float(r.score)) for r in rows]


Fused = list[tuple[int, float, dict[str, tuple[int, float]]]]


def rrf(legs: dict[str, list[tuple[int, float]]], k: int = RRF_K) -> Fused:
    """Reciprocal rank fusion: score = sum over legs of 1 / (k + rank)."""
    fused: dict[int, float] = {}
    detail: dict[int, dict[str, tuple[int, float]]] = {}
    for leg, hits in legs.items():
        for rank, (chunk_id, score) in enumerate(hits, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
            detail.setdefault(chunk_id, {})[leg] = (rank, score)
    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [(cid, score, detail[cid]) for cid, score in ordered]


def search(db: Database, embedder: Embedder, store: str, query: str, *, mode: str = "hybrid", limit: int = 10,
           candidates: int = 50) -> list[Hit]:
    from sqlalchemy import bindparam, text
    from sqlalchemy.dialects.postgresql import ARRAY, BIGINT

    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if not query.strip():
        raise InvalidInputError("empty query")
    if limit < 1:
        raise InvalidInputError("--limit must be at least 1")
    k = max(candidates, limit)
    qvec = vectors.vector_literal(embedder.embed([query])[0]) if mode != "keyword" else None
    with db.connect() as conn:
        sid = store_id(conn, store, create=False)
        if sid is None:
            return []
        legs: dict[str, list[tuple[int, float]]] = {}
        if qvec is not None:
            space = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim)
            legs["vector"] = _vector_leg(conn, space, embedder.dim, sid, qvec, k) if space else []
        if mode != "vector":
            legs["keyword"] = _keyword_leg(conn, sid, query, k)
        fused = rrf(legs)[:limit]
        if not fused:
            return []
        ids = [cid for cid, _, _ in fused]
        stmt = text(f"""
            WITH q AS (SELECT {_OR_QUERY} AS tsq)
            SELECT c.id, c.document_id, d.source, d.title, d.tags, c.heading, c.location, c.text,
                   CASE WHEN q.tsq IS NULL THEN left(c.text, 240) ELSE ts_headline('{TS_CONFIG}'::regconfig, c.text,
                     q.tsq, 'MaxFragments=2, MinWords=12, MaxWords=30, StartSel=«, StopSel=», FragmentDelimiter= … ')
                   END AS snippet
            FROM chunks c JOIN documents d ON d.id = c.document_id, q
            WHERE c.id = ANY(:ids)""").bindparams(bindparam("ids", type_=ARRAY(BIGINT)))
        rows = {r.id: r for r in conn.execute(stmt, {"ids": ids, "query": query})}
    hits = []
    for rank, (cid, score, detail) in enumerate(fused, start=1):
        row = rows[cid]
        vec, kw = detail.get("vector"), detail.get("keyword")
        hits.append(Hit(rank, score, cid, row.document_id, row.source, row.title, row.heading, row.location or {},
                        row.text, row.snippet, vec[0] if vec else None, vec[1] if vec else None,
                        kw[0] if kw else None, kw[1] if kw else None, list(row.tags or [])))
    return hits
