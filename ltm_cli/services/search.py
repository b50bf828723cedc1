"""Hybrid retrieval over reference chunks and conversation messages.

Two retrievers per kind of memory:
- vector (here): pgvector cosine over the store's embedding space (per-space HNSW, iterative scans for filters,
  and an exact scan when the index cannot fill `--limit`);
- keyword (keyword.py): BM25 computed in SQL from the tsvector columns.
Both see the same filters (filters.py). Their scores are min-max scaled and fused, the query vector takes one
round of pseudo-relevance feedback, and conversation turns gain from strong neighbours; `--diverse` adds MMR
(the arithmetic in fusion.py; this module fetches what it needs). bench/retrieval.py and bench/conversations.py
measured each step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError
from ltm_cli.services.filters import CORPORA, Corpus, Filters
from ltm_cli.services.fusion import (
    NEIGHBOUR_WEIGHT,
    Fused,
    Key,
    Legs,
    boost_neighbours,
    convex,
    feedback_vector,
    fuse,
    mmr,
)
from ltm_cli.services.keyword import keyword_leg
from ltm_cli.storage import vectors
from ltm_cli.storage.names import TS_CONFIG
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Connection

    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

MODES = ("hybrid", "vector", "keyword")
CANDIDATES = 100  # rows each retriever contributes to fusion
OPERATION_ALPHA = 0.7  # vector weight when API operations lead the first pass (bench/api_questions.py)
FEEDBACK_ROWS = 3  # pseudo-relevance feedback: the best fused rows the query vector moves towards
MMR_POOL = 3  # --diverse picks `limit` results from the best limit * MMR_POOL
EF_SEARCH = 100


@dataclass
class Hit:
    rank: int
    kind: str  # docs, history or notes
    id: int  # chunk, message or note id
    score: float
    text: str
    snippet: str
    vector_rank: int | None = None
    vector_score: float | None = None
    keyword_rank: int | None = None
    keyword_score: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # documents
    document_id: int | None = None
    source: str | None = None
    title: str | None = None
    heading: str | None = None
    location: dict[str, Any] = field(default_factory=dict)
    ordinal: int | None = None
    tags: list[str] = field(default_factory=list)
    # history
    conversation_id: str | None = None
    seq: int | None = None
    role: str | None = None
    name: str | None = None
    tool_name: str | None = None
    outcome: str | None = None
    outcome_note: str | None = None
    created_at: dt.datetime | None = None
    context: list[dict[str, Any]] = field(default_factory=list)
    # notes (tags, metadata and created_at above apply too)
    about: str | None = None
    source_messages: list[int] = field(default_factory=list)
    source_documents: list[int] = field(default_factory=list)
    author: str | None = None
    valid_until: dt.datetime | None = None
    superseded_by: int | None = None


class Hits(list):
    """Search results, best first (a plain list to every caller), with `warnings` about what the search could
    not see: rows without a vector in the embedder's space are found by keyword only."""

    def __init__(self, hits: Sequence[Hit] = (), warnings: Sequence[str] = ()) -> None:
        super().__init__(hits)
        self.warnings = list(warnings)


def citation(location: dict[str, Any]) -> str:
    """Where a passage came from: page N, a heading path, or METHOD /path."""
    if "method" in location:
        return f"{location['method']} {location['path']}"
    if "page" in location:
        return f"page {location['page']}"
    if location.get("heading"):
        return location["heading"]
    if "line" in location:
        return f"line {location['line']}"
    return ""


# -- vector leg ----------------------------------------------------------------------------------------
def _distance(dim: int) -> str:
    return f"e.embedding::halfvec({int(dim)}) <=> CAST(:qvec AS halfvec({int(dim)}))"


def vector_sql(corpus: Corpus, where: list[str], space: int, dim: int) -> str:
    """Nearest rows by the space's partial HNSW index: the literal space id and the cast to halfvec(dim) are
    what let the planner match the index `embeddings_hnsw_space_N`."""
    return f"""
        SELECT x.id, {_distance(dim)} AS distance
        FROM embeddings e JOIN {corpus.table} x ON x.embed_hash = e.content_hash {corpus.join}
        WHERE e.space_id = {int(space)} AND {' AND '.join(where)}
        ORDER BY {_distance(dim)} LIMIT :k"""


def _vector_leg(conn: Connection, corpus: Corpus, where: list[str], params: dict[str, Any], space: int, dim: int,
                qvec: str, k: int) -> list[tuple[int, float]]:
    from sqlalchemy import text

    conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}"))
    conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    distance = _distance(dim)
    args = {**params, "qvec": qvec, "k": k}
    rows = conn.execute(text(vector_sql(corpus, where, space, dim)), args).all()
    if len(rows) < k:
        # The index stops after hnsw.max_scan_tuples; a narrow filter may need more. Exact search over the
        # filtered rows decides whether fewer really exist: never silently fewer than --limit.
        rows = conn.execute(text(f"""
            WITH f AS MATERIALIZED (
                SELECT x.id, x.embed_hash FROM {corpus.table} x {corpus.join} WHERE {' AND '.join(where)})
            SELECT f.id, {distance} AS distance FROM f
            JOIN embeddings e ON e.space_id = {int(space)} AND e.content_hash = f.embed_hash
            ORDER BY distance LIMIT :k"""), args).all()
    ordered = sorted(((r.id, 1.0 - float(r.distance)) for r in rows), key=lambda item: (-item[1], item[0]))
    return ordered[:k]


# -- search ------------------------------------------------------------------------------------------------
def _or_query_sql() -> str:
    return (f"(SELECT CASE WHEN count(*) = 0 THEN NULL ELSE string_agg(quote_literal(l), ' | ')::tsquery END "
            f"FROM unnest(tsvector_to_array(to_tsvector('{TS_CONFIG}'::regconfig, :query))) AS l)")


def _headline(column: str) -> str:
    return (f"CASE WHEN q.tsq IS NULL THEN left({column}, 240) ELSE ts_headline('{TS_CONFIG}'::regconfig, "
            f"{column}, q.tsq, 'MaxFragments=2, MinWords=12, MaxWords=30, StartSel=«, StopSel=», "
            f"FragmentDelimiter= … ') END")


def _details(conn: Connection, kind: str, ids: list[int], query: str) -> dict[int, dict[str, Any]]:
    from sqlalchemy import bindparam, text
    from sqlalchemy.dialects.postgresql import ARRAY, BIGINT

    if not ids:
        return {}
    if kind == "docs":
        sql = f"""WITH q AS (SELECT {_or_query_sql()} AS tsq)
            SELECT c.id, c.document_id, d.source, d.title, d.tags, d.metadata - '_pipeline' AS metadata, c.heading,
                   c.location, c.ordinal, c.text, {_headline('c.text')} AS snippet
            FROM chunks c JOIN documents d ON d.id = c.document_id, q WHERE c.id = ANY(:ids)"""
    elif kind == "notes":
        sql = f"""WITH q AS (SELECT {_or_query_sql()} AS tsq)
            SELECT n.id, n.text, n.about, n.tags, n.metadata, n.source_messages, n.source_documents, n.author,
                   n.created_at, n.valid_until, n.superseded_by, {_headline('n.text')} AS snippet
            FROM notes n, q WHERE n.id = ANY(:ids)"""
    else:
        sql = f"""WITH q AS (SELECT {_or_query_sql()} AS tsq)
            SELECT m.id, coalesce(v.external_id, v.id::text) AS conversation_id, v.title, m.seq, m.role, m.name,
                   m.content AS text, m.tool_name, m.outcome, m.outcome_note, m.metadata, m.created_at,
                   {_headline('m.content')} AS snippet
            FROM messages m JOIN conversations v ON v.id = m.conversation_id, q WHERE m.id = ANY(:ids)"""
    stmt = text(sql).bindparams(bindparam("ids", type_=ARRAY(BIGINT)))
    return {r["id"]: dict(r) for r in conn.execute(stmt, {"ids": ids, "query": query}).mappings()}


def _with_neighbours(conn: Connection, fused: Fused) -> Fused:
    """Conversation turns gain from strong neighbouring turns (fusion.boost_neighbours), placed from the database."""
    from sqlalchemy import text

    ids = [key[1] for key, _, _ in fused if key[0] == "history"]
    if not ids or not NEIGHBOUR_WEIGHT:
        return fused
    place = {("history", r.id): (r.conversation_id, r.seq) for r in conn.execute(
        text("SELECT id, conversation_id, seq FROM messages WHERE id = ANY(:ids)"), {"ids": ids})}
    return boost_neighbours(fused, place, NEIGHBOUR_WEIGHT)


Scope = tuple[str, list[str], dict[str, Any]]  # (kind, WHERE clauses, their parameters)


def filter_scopes(conn: Connection, kinds: Sequence[str], filters: Filters, sid: int) -> list[Scope]:
    """The filters as SQL, per kind searched: built once per search, shared by every retriever call."""
    scopes = []
    for kind in kinds:
        params: dict[str, Any] = {"store": sid}
        scopes.append((kind, CORPORA[kind].where(filters, params, conn, sid), params))
    return scopes


def leg_rankings(conn: Connection, scopes: Sequence[Scope], sid: int, space: int | None, dim: int,
                 qvec: str | None, query: str | None, k: int) -> Legs:
    """Each retriever's best k rows over the kinds searched (a None query or vector skips that retriever)."""
    legs: Legs = {}
    for kind, where, params in scopes:
        corpus = CORPORA[kind]
        if qvec is not None:
            found = _vector_leg(conn, corpus, where, params, space, dim, qvec, k) if space else []
            legs.setdefault("vector", []).extend(((kind, i), s) for i, s in found)
        if query is not None:
            found = keyword_leg(conn, corpus, sid, where, params, query, k)
            legs.setdefault("keyword", []).extend(((kind, i), s) for i, s in found)
    for leg in legs.values():  # two kinds: one list per retriever, best first
        leg.sort(key=lambda item: -item[1])
    return legs


def _row_vectors(conn: Connection, space: int, keys: Sequence[Key]) -> dict[Key, np.ndarray]:
    """The stored vectors of these rows in the space (rows without one are left out)."""
    import numpy as np
    from sqlalchemy import text

    found: dict[Key, np.ndarray] = {}
    for kind in {key[0] for key in keys}:
        rows = conn.execute(text(
            f"SELECT x.id, e.embedding::text AS v FROM {CORPORA[kind].table} x JOIN embeddings e "
            f"ON e.space_id = {int(space)} AND e.content_hash = x.embed_hash WHERE x.id = ANY(:ids)"),
            {"ids": [i for kd, i in keys if kd == kind]}).all()
        found.update({(kind, r.id): np.array(r.v.strip("[]").split(","), dtype=np.float32) for r in rows})
    return found


def _moved_query(conn: Connection, space: int, qvec: np.ndarray, top: Sequence[Key]) -> str:
    """Pseudo-relevance feedback: the query vector moved towards the stored vectors of the first pass's best
    rows (fusion.feedback_vector), as a vector literal."""
    return vectors.vector_literal(feedback_vector(qvec, list(_row_vectors(conn, space, top).values())))


@dataclass(frozen=True)
class _Mark:
    """What a candidate chunk's location says about it: the API operation it belongs to, a contents page."""

    operation: tuple[int, str, str] | None  # (document, method, path)
    toc: bool


def _chunk_marks(conn: Connection, fused: Fused, marks: dict[Key, _Mark]) -> dict[Key, _Mark]:
    """Add the marks of the document chunks in `fused` not looked up yet: one query for the first pass, one
    for the rows the feedback round brings, whatever uses them."""
    from sqlalchemy import text

    ids = [key[1] for key, _, _ in fused if key[0] == "docs" and key not in marks]
    if ids:
        for r in conn.execute(text(
                "SELECT id, document_id, location ->> 'method' AS method, location ->> 'path' AS path, "
                "coalesce(location ->> 'toc' = 'true', false) AS toc FROM chunks WHERE id = ANY(:ids)"), {"ids": ids}):
            operation = (r.document_id, r.method, r.path) if r.method is not None else None
            marks[("docs", r.id)] = _Mark(operation, r.toc)
    return marks


def _body_first(fused: Fused, marks: dict[Key, _Mark]) -> Fused:
    """Chunks of contents and index pages (`location.toc`, marked by the PDF loader) after all the others: they
    match a question's words but only say on which page the answer is."""
    navigation = {key for key, _, _ in fused if key in marks and marks[key].toc}
    if not navigation:
        return fused
    return [item for item in fused if item[0] not in navigation] + [item for item in fused if item[0] in navigation]


def first_per_group(fused: Fused, group: dict[Key, Any]) -> Fused:
    """Each group's best row only (rows without a group all stay), in fused order."""
    seen: set[Any] = set()
    out = []
    for item in fused:
        mark = group.get(item[0])
        if mark is None or mark not in seen:
            out.append(item)
            if mark is not None:
                seen.add(mark)
    return out


def _operations_lead(top: Fused, marks: dict[Key, _Mark]) -> bool:
    """True when the best rows are all API operations: feedback then pulls the query towards neighbouring
    operations of the same resource (retrieve/update/list next to attach) and costs the right one its place
    (bench/api_questions.py), while on prose it helps (bench/retrieval.py)."""
    return all(key in marks and marks[key].operation is not None for key, _, _ in top)


def _one_per_operation(fused: Fused, marks: dict[Key, _Mark]) -> Fused:
    """An API operation split into several chunks counts once, at its best chunk: its other chunks (parameters,
    responses) would push the next operations down the list (bench/api_questions.py measured it)."""
    operation = {key: mark.operation for key, mark in marks.items() if mark.operation is not None}
    return first_per_group(fused, operation) if operation else fused


def _diversify(conn: Connection, space: int, fused: Fused, limit: int) -> Fused:
    """MMR (fusion.mmr) over the best limit * MMR_POOL candidates; the rest follow in their fused order."""
    import numpy as np

    pool = fused[:max(limit * MMR_POOL, limit)]
    if not pool:
        return fused
    vecs = _row_vectors(conn, space, [key for key, _, _ in pool])
    dim = next(iter(vecs.values())).shape[0] if vecs else 1
    matrix = np.stack([vecs.get(key, np.zeros(dim, dtype=np.float32)) for key, _, _ in pool])
    chosen = [pool[i] for i in mmr([score for _, score, _ in pool], matrix, limit)]
    return chosen + [item for item in fused if item not in chosen]


def search(db: Database, embedder: Embedder | None, store: StoreRef, query: str, *, mode: str = "hybrid",
           limit: int = 10, filters: Filters | None = None, candidates: int = CANDIDATES, context: int = 0,
           fusion: str = "convex", feedback: bool = True, diverse: bool = False,
           include_toc: bool = False) -> Hits:
    """The best `limit` passages or messages for a query; `context` adds neighbouring turns to history hits.

    Hybrid: BM25 and vector legs fused by score (min-max scaled, ALPHA on the vector side), then one round of
    vector pseudo-relevance feedback (FEEDBACK_ROWS best fused rows) and the fusion again. Both choices come
    from bench/retrieval.py (see the README). Contents and index chunks come after the rest (before feedback
    too, so they do not steer it) unless `include_toc`: bench/pdf_questions.py measured it."""
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if not query.strip():
        raise InvalidInputError("empty query")
    if limit < 1:
        raise InvalidInputError("--limit must be at least 1")
    filters = filters or Filters()
    kinds = filters.kinds()
    k = max(candidates, limit)
    qvec = None
    if mode != "keyword":
        if embedder is None:
            raise InvalidInputError(f"mode {mode} needs an embedder")
        from ltm_cli.services.embedding import query_vector

        qvec = query_vector(embedder, query)
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return Hits()
        space = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim) if qvec is not None \
            else None
        warnings = []
        if qvec is not None:
            from ltm_cli.services import embedspace

            said = embedspace.warning(embedspace.unembedded(conn, sid, space, kinds), embedder, store, mode)
            warnings = [said] if said else []
        dim = embedder.dim if embedder is not None else 0
        literal = vectors.vector_literal(qvec) if qvec is not None else None
        scopes = filter_scopes(conn, kinds, filters, sid)
        legs = leg_rankings(conn, scopes, sid, space, dim, literal, query if mode != "vector" else None, k)
        toc_last = not include_toc and "docs" in kinds
        fused = fuse(legs, fusion)
        marks = _chunk_marks(conn, fused, {}) if "docs" in kinds else {}
        if toc_last:
            fused = _body_first(fused, marks)
        operations = mode == "hybrid" and fusion == "convex" and _operations_lead(fused[:FEEDBACK_ROWS], marks)
        if operations:
            fused = convex(legs, OPERATION_ALPHA)
        if mode == "hybrid" and feedback and space and FEEDBACK_ROWS and fused and not operations:
            moved = _moved_query(conn, space, qvec, [key for key, _, _ in fused[:FEEDBACK_ROWS]])
            legs["vector"] = leg_rankings(conn, scopes, sid, space, dim, moved, None, k).get("vector", [])
            fused = fuse(legs, fusion)
            if "docs" in kinds:
                _chunk_marks(conn, fused, marks)
        if "docs" in kinds:
            fused = _one_per_operation(fused, marks)
        if "history" in kinds:
            fused = _with_neighbours(conn, fused)
        if diverse and space:
            fused = _diversify(conn, space, fused, limit)
        if toc_last:
            fused = _body_first(fused, marks)
        fused = fused[:limit]
        details = {kind: _details(conn, kind, [i for (kd, i), _, _ in fused if kd == kind], query) for kind in kinds}
    hits = []
    for rank, ((kind, row_id), score, detail) in enumerate(fused, start=1):
        row = details[kind][row_id]
        vec, kw = detail.get("vector"), detail.get("keyword")
        hit = Hit(rank, kind, row_id, score, row.pop("text"), row.pop("snippet"),
                  vec[0] if vec else None, vec[1] if vec else None, kw[0] if kw else None, kw[1] if kw else None)
        row.pop("id")
        for name, value in row.items():
            if value is not None:
                setattr(hit, name, value)
        hits.append(hit)
    if context and any(h.kind == "history" for h in hits):
        from ltm_cli.services.history import neighbours

        around = neighbours(db, [h.id for h in hits if h.kind == "history"], context)
        for hit in hits:
            hit.context = [{"id": t.id, "seq": t.seq, "role": t.role, "name": t.name, "content": t.content,
                            "tool_name": t.tool_name, "tool_args": t.tool_args, "tool_result": t.tool_result,
                            "outcome": t.outcome, "outcome_note": t.outcome_note, "created_at": t.created_at}
                           for t in around.get(hit.id, [])]
    return Hits(hits, warnings)
