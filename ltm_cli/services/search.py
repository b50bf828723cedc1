"""Hybrid retrieval over reference chunks and conversation messages.

Two retrievers per kind of memory:
- vector: pgvector cosine over the store's embedding space (per-space HNSW, iterative scans for filters, and an
  exact scan when the index cannot fill `--limit`);
- keyword: BM25 computed in SQL from the tsvector columns: document frequencies from pg_stats or exact counts,
  term frequencies decoded from ts_rank (heading/speaker terms count extra), lengths from token_count.
Their scores are min-max scaled and fused, the query vector takes one round of pseudo-relevance feedback, and
conversation turns gain from strong neighbours; `--diverse` adds MMR. bench/retrieval.py and
bench/conversations.py measured each step.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError
from ltm_cli.storage import vectors
from ltm_cli.storage.names import TS_CONFIG
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Connection

    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

MODES = ("hybrid", "vector", "keyword")
KINDS = ("docs", "history", "all")
RRF_K = 60
CANDIDATES = 100  # rows each retriever contributes to fusion
ALPHA = 0.55  # weight of the vector side in score fusion
FEEDBACK_ROWS = 3  # pseudo-relevance feedback: the best fused rows the query vector moves towards ...
FEEDBACK_WEIGHT = 1.0  # ... with this weight (their mean is added to the unit query vector)
NEIGHBOUR_WEIGHT = 0.4  # share of the best neighbouring turn's score a conversation turn gains
MMR_LAMBDA = 0.7  # --diverse: weight of relevance against similarity to what is already picked
MMR_POOL = 3  # --diverse picks `limit` results from the best limit * MMR_POOL
DUPLICATE_SIMILARITY = 0.95  # --diverse: a cosine this close to a pick makes a row a near-copy of it
EF_SEARCH = 100
BM25_K1 = 1.2
BM25_B = 0.75
HEADING_BOOST = 2.0  # a title/heading (or speaker) occurrence counts as this many body occurrences
STATS_SHARE = 0.5  # below this share of the table, a store's word counts are counted, not taken from pg_stats
POSTING_BUDGET = 2_000  # match on the rarest query terms whose postings sum to this; the rest only score


@dataclass(frozen=True)
class Filters:
    kind: str = "docs"
    source: str | None = None  # glob over document sources
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    role: str | None = None
    outcome: str | None = None
    conversation: str | None = None

    def kinds(self) -> tuple[str, ...]:
        if self.kind not in KINDS:
            raise InvalidInputError(f"unknown kind {self.kind!r}", hint=f"use one of: {', '.join(KINDS)}")
        docs_only = bool(self.source or self.tags)
        history_only = bool(self.role or self.outcome or self.conversation)
        if docs_only and history_only:
            raise InvalidInputError("--source/--tag apply to documents and --role/--outcome/--conversation to "
                                    "history: no result can match both")
        if self.kind == "docs" and history_only:
            raise InvalidInputError("--role, --outcome and --conversation filter history",
                                    hint="add --kind history")
        if self.kind == "history" and docs_only:
            raise InvalidInputError("--source and --tag filter documents", hint="add --kind docs")
        if self.kind == "all":
            return ("history",) if history_only else ("docs",) if docs_only else ("docs", "history")
        return (self.kind,)


@dataclass
class Hit:
    rank: int
    kind: str  # docs or history
    id: int  # chunk id or message id
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


@dataclass(frozen=True)
class _Corpus:
    """How one kind of memory is laid out: the searchable rows, their join for filters, their columns."""

    table: str
    join: str

    def where(self, filters: Filters, params: dict[str, Any], conn: Connection, sid: int) -> list[str]:
        from ltm_cli.services.history import message_filters, time_filters

        clauses = ["x.store_id = :store"]
        if self.table == "chunks":
            if filters.source:
                from ltm_cli.services.documents import _like

                clauses.append("(p.source LIKE :src ESCAPE '\\' OR p.source LIKE :src_any ESCAPE '\\')")
                params["src"], params["src_any"] = _like(filters.source), "%/" + _like(filters.source)
            if filters.tags:
                clauses.append("p.tags @> CAST(:tags AS text[])")
                params["tags"] = list(filters.tags)
            time_filters(clauses, params, "p.updated_at", filters.since, filters.until)
            meta_column = "p.metadata"
        else:
            message_filters(conn, sid, "x", clauses, params, conversation=filters.conversation, role=filters.role,
                            outcome=filters.outcome, since=filters.since, until=filters.until)
            meta_column = "x.metadata"
        if filters.meta:
            clauses.append(f"{meta_column} @> CAST(:meta AS jsonb)")
            params["meta"] = json.dumps(filters.meta, ensure_ascii=False)
        return clauses


CORPORA = {
    "docs": _Corpus("chunks", "JOIN documents p ON p.id = x.document_id"),
    "history": _Corpus("messages", "JOIN conversations p ON p.id = x.conversation_id"),
}


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


def vector_sql(corpus: _Corpus, where: list[str], space: int, dim: int) -> str:
    """Nearest rows by the space's partial HNSW index: the literal space id and the cast to halfvec(dim) are
    what let the planner match the index `embeddings_hnsw_space_N`."""
    return f"""
        SELECT x.id, {_distance(dim)} AS distance
        FROM embeddings e JOIN {corpus.table} x ON x.embed_hash = e.content_hash {corpus.join}
        WHERE e.space_id = {int(space)} AND {' AND '.join(where)}
        ORDER BY {_distance(dim)} LIMIT :k"""


def _vector_leg(conn: Connection, corpus: _Corpus, where: list[str], params: dict[str, Any], space: int, dim: int,
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


# -- keyword leg: BM25 in SQL ------------------------------------------------------------------------------
# ts_rank of a one-lexeme query with uniform weights w is w * sum(1/j^2, j = 1..tf) / (pi^2/6); since
# sum(1/j^2, j = 1..n) ~ pi^2/6 - 1/(n + 1/2), the term frequency is recovered exactly (after rounding) as
# 1 / ((pi^2/6) * (1 - rank)) - 1/2. Weights {0,0,0,1} count only the 'A' (heading, speaker) occurrences,
# which come first in the tsvector. This reads two binary searches per term instead of unnesting the vector.
_ZETA2 = 1.6449340668


def _tf(weights: str, lexeme_param: str) -> str:
    # rank 0 (absent) decodes to round(0.108) = 0: no CASE, so ts_rank runs once
    return (f"round(1 / ({_ZETA2} * (1 - ts_rank('{weights}'::float4[], x.tsv, CAST(:{lexeme_param} AS tsquery))))"
            f" - 0.5)")


def query_terms(conn: Connection, corpus: _Corpus, sid: int, query: str) -> tuple[int, float, list[tuple[str, int]]]:
    """The store's row count and average length, and each query lexeme (in query order) with its document
    frequency.

    Frequent lexemes take their frequency from the planner's statistics (ANALYZE keeps the most common
    lexemes of every tsvector column) when the store holds most of the table, so that the table's frequencies
    are the store's; the rest are counted exactly, which the GIN index (rare words) or the store index (a small
    store) makes cheap."""
    from sqlalchemy import text

    # One round trip. The store's size comes from the statistics when it is one of the table's most common stores
    # (else it is small enough to count), the mean length from a bounded sample: BM25 needs both only roughly.
    rows = conn.execute(text(f"""
        WITH size AS MATERIALIZED (SELECT coalesce(
                (SELECT round(c.reltuples * s.most_common_freqs[
                            array_position(s.most_common_vals::text::int[], CAST(:store AS int))])
                 FROM pg_stats s, pg_class c
                 WHERE s.schemaname = current_schema() AND s.tablename = '{corpus.table}'
                   AND s.attname = 'store_id' AND c.oid = '{corpus.table}'::regclass AND c.reltuples > 0),
                (SELECT count(*) FROM {corpus.table} WHERE store_id = :store)) AS n),
             len AS MATERIALIZED (SELECT coalesce(avg(token_count), 0) AS avg FROM (SELECT token_count
                 FROM {corpus.table} WHERE store_id = :store LIMIT 2000) AS sample),
             st AS MATERIALIZED (SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs
                 FROM pg_stats WHERE schemaname = current_schema() AND tablename = '{corpus.table}'
                   AND attname = 'tsv'),
             q AS (SELECT u.lexeme, u.positions[1] AS position
                   FROM unnest(to_tsvector('{TS_CONFIG}'::regconfig, :query)) AS u)
        SELECT q.lexeme, size.n, len.avg,
               coalesce((SELECT round(st.freqs[array_position(st.elems, q.lexeme)] * size.n) FROM st
                         WHERE size.n >= {STATS_SHARE} * (SELECT reltuples FROM pg_class
                                                          WHERE oid = '{corpus.table}'::regclass)),
                        (SELECT count(*) FROM {corpus.table} x
                         WHERE x.store_id = :store AND x.tsv @@ quote_literal(q.lexeme)::tsquery)) AS df
        FROM q, size, len ORDER BY q.position, q.lexeme"""), {"store": sid, "query": query}).all()
    n, avg_len = (int(rows[0].n), float(rows[0].avg)) if rows else (0, 0.0)
    return n, avg_len, [(r.lexeme, int(r.df)) for r in rows]


def _keyword_leg(conn: Connection, corpus: _Corpus, sid: int, where: list[str], params: dict[str, Any], query: str,
                 k: int) -> list[tuple[int, float]]:
    from sqlalchemy import text

    n, avg_len, terms = query_terms(conn, corpus, sid, query)
    terms = [(lexeme, df) for lexeme, df in terms if df > 0]
    if not terms:
        return []
    n = max(n, max(df for _, df in terms))  # statistics older than the exact counts must not make idf negative
    idfs = {lexeme: math.log(1.0 + (n - df + 0.5) / (df + 0.5)) for lexeme, df in terms}
    # Rows to score are those holding one of the rarest terms (within a postings budget): a word found in
    # most rows adds little to BM25, and scoring every row that has it is what makes plain ts_rank slow.
    terms.sort(key=lambda item: item[1])
    matching, postings = [], 0
    for lexeme, df in terms:
        if matching and postings + df > POSTING_BUDGET:
            break
        matching.append(lexeme)
        postings += df
    args = {**params, "k": k, "avg": max(avg_len, 1.0),
            "mq": " | ".join("'" + lexeme.replace("'", "''") + "'" for lexeme in matching)}
    tfs, parts = [], []
    for i, (lexeme, _) in enumerate(terms):
        args[f"l{i}"] = "'" + lexeme.replace("'", "''") + "'"
        idf = idfs[lexeme]
        tfs.append(f"{_tf('{1,1,1,1}', f'l{i}')} + {HEADING_BOOST - 1} * {_tf('{0,0,0,1}', f'l{i}')} AS tf{i}")
        parts.append(f"{idf!r} * t.tf{i} * {BM25_K1 + 1} / (t.tf{i} + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * "
                     f"x.token_count::float8 / :avg))")
    rows = conn.execute(text(f"""
        SELECT x.id, {' + '.join(parts)} AS score
        FROM {corpus.table} x {corpus.join} CROSS JOIN LATERAL (SELECT {', '.join(tfs)} OFFSET 0) t
        WHERE {' AND '.join(where)} AND x.tsv @@ CAST(:mq AS tsquery)
        ORDER BY score DESC, x.id LIMIT :k"""), args).all()
    return [(r.id, float(r.score)) for r in rows]


# -- fusion ------------------------------------------------------------------------------------------------
Key = tuple[str, int]  # (kind, row id)
Fused = list[tuple[Key, float, dict[str, tuple[int, float]]]]


def rrf(legs: dict[str, list[tuple[Key, float]]], k: int = RRF_K, weights: dict[str, float] | None = None) -> Fused:
    """Reciprocal rank fusion: score = sum over legs of weight / (k + rank)."""
    fused: dict[Key, float] = {}
    detail: dict[Key, dict[str, tuple[int, float]]] = {}
    for leg, hits in legs.items():
        weight = (weights or {}).get(leg, 1.0)
        for rank, (key, score) in enumerate(hits, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
            detail.setdefault(key, {})[leg] = (rank, score)
    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [(key, score, detail[key]) for key, score in ordered]


def convex(legs: dict[str, list[tuple[Key, float]]], alpha: float = 0.5) -> Fused:
    """Score fusion: alpha * vector + (1 - alpha) * keyword, each leg min-max scaled to [0, 1] over its list."""
    fused: dict[Key, float] = {}
    detail: dict[Key, dict[str, tuple[int, float]]] = {}
    for leg, hits in legs.items():
        if not hits:
            continue
        weight = alpha if leg == "vector" else 1.0 - alpha
        scores = [score for _, score in hits]
        low, high = min(scores), max(scores)
        for rank, (key, score) in enumerate(hits, start=1):
            scaled = (score - low) / (high - low) if high > low else 1.0  # one score, or all equal: all count
            fused[key] = fused.get(key, 0.0) + weight * scaled
            detail.setdefault(key, {})[leg] = (rank, score)
    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [(key, score, detail[key]) for key, score in ordered]


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
    else:
        sql = f"""WITH q AS (SELECT {_or_query_sql()} AS tsq)
            SELECT m.id, coalesce(v.external_id, v.id::text) AS conversation_id, v.title, m.seq, m.role, m.name,
                   m.content AS text, m.tool_name, m.outcome, m.outcome_note, m.metadata, m.created_at,
                   {_headline('m.content')} AS snippet
            FROM messages m JOIN conversations v ON v.id = m.conversation_id, q WHERE m.id = ANY(:ids)"""
    stmt = text(sql).bindparams(bindparam("ids", type_=ARRAY(BIGINT)))
    return {r["id"]: dict(r) for r in conn.execute(stmt, {"ids": ids, "query": query}).mappings()}


def fuse(legs: dict[str, list[tuple[Key, float]]], fusion: str = "convex") -> Fused:
    if fusion == "rrf":
        return rrf(legs)
    return convex(legs, ALPHA)


def _with_neighbours(conn: Connection, fused: Fused) -> Fused:
    """A conversation turn next to a strong match gains NEIGHBOUR_WEIGHT of that match's score: the answer to a
    question is usually the turn after it, and one topic spans several turns (measured on LoCoMo)."""
    from sqlalchemy import text

    ids = [key[1] for key, _, _ in fused if key[0] == "history"]
    if not ids or not NEIGHBOUR_WEIGHT:
        return fused
    place = {r.id: (r.conversation_id, r.seq) for r in conn.execute(
        text("SELECT id, conversation_id, seq FROM messages WHERE id = ANY(:ids)"), {"ids": ids})}
    score_at = {place[key[1]]: score for key, score, _ in fused if key[0] == "history"}
    out = []
    for key, score, detail in fused:
        if key[0] == "history":
            conversation, seq = place[key[1]]
            score += NEIGHBOUR_WEIGHT * max(score_at.get((conversation, seq - 1), 0.0),
                                            score_at.get((conversation, seq + 1), 0.0))
        out.append((key, score, detail))
    return sorted(out, key=lambda item: (-item[1], item[0]))


Scope = tuple[str, list[str], dict[str, Any]]  # (kind, WHERE clauses, their parameters)


def _scopes(conn: Connection, kinds: Sequence[str], filters: Filters, sid: int) -> list[Scope]:
    """The filters as SQL, per kind searched: built once per search, shared by every retriever call."""
    scopes = []
    for kind in kinds:
        params: dict[str, Any] = {"store": sid}
        scopes.append((kind, CORPORA[kind].where(filters, params, conn, sid), params))
    return scopes


def _legs(conn: Connection, scopes: Sequence[Scope], sid: int, space: int | None, dim: int, qvec: str | None,
          query: str | None, k: int) -> dict[str, list[tuple[Key, float]]]:
    """Each retriever's best k rows over the kinds searched (a None query or vector skips that retriever)."""
    legs: dict[str, list[tuple[Key, float]]] = {}
    for kind, where, params in scopes:
        corpus = CORPORA[kind]
        if qvec is not None:
            found = _vector_leg(conn, corpus, where, params, space, dim, qvec, k) if space else []
            legs.setdefault("vector", []).extend(((kind, i), s) for i, s in found)
        if query is not None:
            found = _keyword_leg(conn, corpus, sid, where, params, query, k)
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


def _feedback_vector(conn: Connection, space: int, qvec: np.ndarray, top: Sequence[Key]) -> str:
    """Pseudo-relevance feedback: the query vector moved towards the mean of the first pass's best rows."""
    import numpy as np

    found = list(_row_vectors(conn, space, top).values())
    if not found:
        return vectors.vector_literal(qvec)
    moved = qvec + FEEDBACK_WEIGHT * np.mean(found, axis=0)
    return vectors.vector_literal(moved / np.linalg.norm(moved))


def _diversify(conn: Connection, space: int, fused: Fused, limit: int) -> Fused:
    """Maximal marginal relevance over the best candidates: each pick trades its fused score against its
    similarity to the picks before it (MMR_LAMBDA on relevance), and near-copies of a pick come last, so
    duplicates stop filling the list."""
    import numpy as np

    pool = fused[:max(limit * MMR_POOL, limit)]
    if not pool:
        return fused
    vecs = _row_vectors(conn, space, [key for key, _, _ in pool])
    dim = next(iter(vecs.values())).shape[0] if vecs else 1
    matrix = np.stack([vecs.get(key, np.zeros(dim, dtype=np.float32)) for key, _, _ in pool])
    relevance = np.array([score for _, score, _ in pool], dtype=np.float32)
    relevance /= relevance.max() if relevance.size and relevance.max() > 0 else 1.0
    closest = np.zeros(len(pool), dtype=np.float32)  # each candidate's similarity to its nearest pick so far
    open_ = np.ones(len(pool), dtype=bool)
    chosen: Fused = []
    while open_.any() and len(chosen) < limit:
        gain = np.where(open_, MMR_LAMBDA * relevance - (1 - MMR_LAMBDA) * closest, -np.inf)
        fresh = open_ & (closest < DUPLICATE_SIMILARITY)  # near-copies of a pick wait until nothing else is left
        if fresh.any():
            gain = np.where(fresh, gain, -np.inf)
        pick = int(np.argmax(gain))
        open_[pick] = False
        chosen.append(pool[pick])
        closest = np.maximum(closest, matrix @ matrix[pick])
    return chosen + [item for item in fused if item not in chosen]


def search(db: Database, embedder: Embedder | None, store: StoreRef, query: str, *, mode: str = "hybrid",
           limit: int = 10, filters: Filters | None = None, candidates: int = CANDIDATES, context: int = 0,
           fusion: str = "convex", feedback: bool = True, diverse: bool = False) -> list[Hit]:
    """The best `limit` passages or messages for a query; `context` adds neighbouring turns to history hits.

    Hybrid: BM25 and vector legs fused by score (min-max scaled, ALPHA on the vector side), then one round of
    vector pseudo-relevance feedback (FEEDBACK_ROWS best fused rows) and the fusion again. Both choices come
    from bench/retrieval.py (see the README)."""
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
            return []
        space = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim) if qvec is not None \
            else None
        dim = embedder.dim if embedder is not None else 0
        literal = vectors.vector_literal(qvec) if qvec is not None else None
        scopes = _scopes(conn, kinds, filters, sid)
        legs = _legs(conn, scopes, sid, space, dim, literal, query if mode != "vector" else None, k)
        fused = fuse(legs, fusion)
        if mode == "hybrid" and feedback and space and FEEDBACK_ROWS and fused:
            moved = _feedback_vector(conn, space, qvec, [key for key, _, _ in fused[:FEEDBACK_ROWS]])
            legs["vector"] = _legs(conn, scopes, sid, space, dim, moved, None, k).get("vector", [])
            fused = fuse(legs, fusion)
        if "history" in kinds:
            fused = _with_neighbours(conn, fused)
        if diverse and space:
            fused = _diversify(conn, space, fused, limit)
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
    return hits


def leg_results(db: Database, embedder: Embedder | None, store: StoreRef, query: str, *, filters: Filters | None = None,
                k: int = 100) -> dict[str, list[tuple[Key, float]]]:
    """Each retriever's own ranking, before fusion and feedback (for benchmarks that study fusion)."""
    filters = filters or Filters()
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return {"vector": [], "keyword": []}
        space = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim) if embedder else None
        literal = vectors.vector_literal(embedder.embed([query])[0]) if embedder else None
        legs = _legs(conn, _scopes(conn, filters.kinds(), filters, sid), sid, space,
                     embedder.dim if embedder else 0, literal, query, k)
    return {"vector": legs.get("vector", []), "keyword": legs.get("keyword", [])}


def row_keys(db: Database, kind: str, ids: Sequence[int]) -> dict[int, Any]:
    """chunk id -> document source, or message id -> (conversation, seq): what benchmarks score against."""
    from sqlalchemy import text

    with db.connect() as conn:
        if kind == "docs":
            rows = conn.execute(text("SELECT c.id, d.source FROM chunks c JOIN documents d ON d.id = c.document_id "
                                     "WHERE c.id = ANY(:ids)"), {"ids": list(ids)}).all()
            return {r.id: r.source for r in rows}
        rows = conn.execute(text("SELECT m.id, m.metadata FROM messages m WHERE m.id = ANY(:ids)"),
                            {"ids": list(ids)}).all()
        return {r.id: r.metadata for r in rows}
