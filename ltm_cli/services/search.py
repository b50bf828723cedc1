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

from psycopg2 import DataError

from ltm_cli.errors import InvalidInputError
from ltm_cli.services.filters import CORPORA, Corpus, Filters
from ltm_cli.services.fusion import (
    DOC_NEIGHBOUR_WEIGHT,
    FEEDBACK_WEIGHT,
    NEIGHBOUR_WEIGHT,
    Fused,
    Key,
    Legs,
    boost_neighbours,
    convex,
    fuse,
    mmr,
)
from ltm_cli.services.keyword import keyword_sql, read_terms, terms_sql
from ltm_cli.storage import vectors
from ltm_cli.storage.engine import fetch, fetch_dicts, named
from ltm_cli.storage.names import TS_CONFIG
from ltm_cli.storage.stores import StoreRef, missing_store_warning

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


# -- the retrievers' SQL ------------------------------------------------------------------------------------
# What each candidate row says about itself, read with the row by both retrievers: the document (or
# conversation) and position it belongs to, and for chunks the API operation and whether it is a contents page.
_MARKS = {
    "chunks": "x.document_id AS grp, x.ordinal AS pos, x.location ->> 'method' AS method, "
              "x.location ->> 'path' AS path, coalesce(x.location ->> 'toc' = 'true', false) AS toc",
    "messages": "x.conversation_id AS grp, x.seq AS pos, NULL::text AS method, NULL::text AS path, false AS toc",
    "notes": "NULL::bigint AS grp, NULL::int AS pos, NULL::text AS method, NULL::text AS path, false AS toc",
}
_MARK_NAMES = "grp, pos, method, path, toc"


def _query_cast(dim: int) -> str:
    return f"CAST(:qvec AS halfvec({int(dim)}))"


def vector_sql(corpus: Corpus, where: list[str], space: int, dim: int, query: str | None = None,
               columns: str = "") -> str:
    """Nearest rows by the space's partial HNSW index: the literal space id and the cast to halfvec(dim) are
    what let the planner match the index `embeddings_hnsw_space_N`. `query` is the query vector's SQL
    (default: the parameter `:qvec`)."""
    distance = f"e.embedding::halfvec({int(dim)}) <=> {query or _query_cast(dim)}"
    return f"""
        SELECT x.id, {distance} AS distance{columns}
        FROM embeddings e JOIN {corpus.table} x ON x.embed_hash = e.content_hash {corpus.join_for(where)}
        WHERE e.space_id = {int(space)} AND {' AND '.join(where)}
        ORDER BY {distance} LIMIT :k"""


def _as_json(select: str) -> str:
    """One retriever's rows (id, score and the marks) as one JSON array, so that several retrievers answer in
    one statement."""
    return (f"(SELECT coalesce(json_agg(json_build_array(r.id, r.score, r.grp, r.pos, r.method, r.path, r.toc)), "
            f"'[]') FROM ({select}) r)")


def _vector_part(corpus: Corpus, where: list[str], space: int, dim: int, query: str | None = None) -> str:
    """The vector retriever as a JSON array. The index scan stops after hnsw.max_scan_tuples, so a narrow filter
    may leave it short of k rows: then, in the same statement, an exact scan over the filtered rows decides
    whether fewer really exist (never silently fewer than --limit). The exact branch runs only when needed."""
    q = query or _query_cast(dim)
    approx = vector_sql(corpus, where, space, dim, q, ", " + _MARKS[corpus.table])
    exact = f"""SELECT f.id, e.embedding::halfvec({int(dim)}) <=> {q} AS distance, {_MARK_NAMES}
        FROM (SELECT x.id, x.embed_hash, {_MARKS[corpus.table]} FROM {corpus.table} x {corpus.join_for(where)}
              WHERE {' AND '.join(where)} OFFSET 0) f
        JOIN embeddings e ON e.space_id = {int(space)} AND e.content_hash = f.embed_hash
        ORDER BY distance LIMIT :k"""
    return _as_json(f"""WITH approx AS MATERIALIZED ({approx})
        SELECT id, 1 - distance AS score, {_MARK_NAMES} FROM approx WHERE (SELECT count(*) FROM approx) >= :k
        UNION ALL
        SELECT id, 1 - distance AS score, {_MARK_NAMES} FROM ({exact}) exact
        WHERE (SELECT count(*) FROM approx) < :k""")


def _keyword_part(corpus: Corpus, where: list[str], params: dict[str, Any], terms: tuple[int, float, list],
                  k: int, tag: str) -> tuple[str, dict[str, Any]] | None:
    n, avg_len, found = terms
    built = keyword_sql(corpus, where, params, n, avg_len, found, k, ", " + _MARKS[corpus.table], tag=tag)
    return (_as_json(built[0]), built[1]) if built else None


def _hnsw_settings(k: int) -> str:
    """SET LOCALs sent in the same string as the query they tune (one implicit transaction)."""
    return (f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, int(k))}; "
            f"SET LOCAL hnsw.iterative_scan = relaxed_order; ")


# -- search ------------------------------------------------------------------------------------------------
def _or_query_sql() -> str:
    return (f"(SELECT CASE WHEN count(*) = 0 THEN NULL ELSE string_agg(quote_literal(l), ' | ')::tsquery END "
            f"FROM unnest(tsvector_to_array(to_tsvector('{TS_CONFIG}'::regconfig, :query))) AS l)")


def _headline(column: str) -> str:
    return (f"CASE WHEN q.tsq IS NULL THEN left({column}, 240) ELSE ts_headline('{TS_CONFIG}'::regconfig, "
            f"{column}, q.tsq, 'MaxFragments=2, MinWords=12, MaxWords=30, StartSel=«, StopSel=», "
            f"FragmentDelimiter= … ') END")


def _details(conn: Connection | Any, kind: str, ids: list[int], query: str) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    if kind == "docs":
        sql = f"""WITH q AS (SELECT {_or_query_sql()} AS tsq)
            SELECT c.id, c.document_id, d.source, d.title, d.tags, d.metadata - '_pipeline' AS metadata, c.heading,
                   c.location, c.ordinal, c.text, {_headline('c.text')} AS snippet
            FROM chunks c JOIN documents d ON d.id = c.document_id, q WHERE c.id = ANY(CAST(:ids AS bigint[]))"""
    elif kind == "notes":
        sql = f"""WITH q AS (SELECT {_or_query_sql()} AS tsq)
            SELECT n.id, n.text, n.about, n.tags, n.metadata, n.source_messages, n.source_documents, n.author,
                   n.created_at, n.valid_until, n.superseded_by, {_headline('n.text')} AS snippet
            FROM notes n, q WHERE n.id = ANY(CAST(:ids AS bigint[]))"""
    else:
        sql = f"""WITH q AS (SELECT {_or_query_sql()} AS tsq)
            SELECT m.id, coalesce(v.external_id, v.id::text) AS conversation_id, v.title, m.seq, m.role, m.name,
                   m.content AS text, m.tool_name, m.outcome, m.outcome_note, m.metadata, m.created_at,
                   {_headline('m.content')} AS snippet
            FROM messages m JOIN conversations v ON v.id = m.conversation_id, q
            WHERE m.id = ANY(CAST(:ids AS bigint[]))"""
    return {r["id"]: r for r in fetch_dicts(conn, named(sql), {"ids": ids, "query": query})}


@dataclass(frozen=True)
class _Mark:
    """What a candidate row says about itself, read with it by the retrievers: the API operation a chunk belongs
    to, whether it is a contents page, and a conversation turn's place."""

    operation: tuple[int, str, str] | None  # (document, method, path)
    toc: bool
    place: tuple[tuple[str, int], int] | None  # ((kind, conversation or document), seq or ordinal)


def _with_neighbours(fused: Fused, marks: dict[Key, _Mark]) -> Fused:
    """Conversation turns gain from strong neighbouring turns, document chunks from the chunks just before and
    after them in their document (fusion.boost_neighbours; each kind's weight measured on its own benchmarks)."""
    for kind, weight in (("history", NEIGHBOUR_WEIGHT), ("docs", DOC_NEIGHBOUR_WEIGHT)):
        place = {key: mark.place for key, mark in marks.items() if key[0] == kind and mark.place is not None}
        if place and weight:
            fused = boost_neighbours(fused, place, weight)
    return fused


Scope = tuple[str, list[str], dict[str, Any]]  # (kind, WHERE clauses, their parameters)


def filter_scopes(conn: Connection, kinds: Sequence[str], filters: Filters, sid: int) -> list[Scope]:
    """The filters as SQL, per kind searched: built once per search, shared by every retriever call."""
    scopes = []
    for kind in kinds:
        params: dict[str, Any] = {"store": sid}
        scopes.append((kind, CORPORA[kind].where(filters, params, conn, sid), params))
    return scopes


def _run_parts(conn: Connection | Any, parts: dict[str, str], params: dict[str, Any],
               prefix: str = "") -> dict[str, Any]:
    """Several independent queries (each one value: a JSON array or a scalar) in one statement, one round trip;
    `conn`: a plain cursor or a SQLAlchemy connection."""
    if not parts:
        return {}
    sql = prefix + "SELECT " + ", ".join(f"{part} AS {name}" for name, part in parts.items())
    return dict(zip(parts, fetch(conn, named(sql), params)[0], strict=True))


def _read_leg(leg: str, scopes: Sequence[Scope], got: dict[str, Any],
              marks: dict[Key, _Mark]) -> list[tuple[Key, float]]:
    """One retriever's rows over the kinds searched, best first, recording each row's marks."""
    ranked: list[tuple[Key, float]] = []
    for kind, _, _ in scopes:
        rows = []
        for row_id, score, grp, pos, method, path, toc in got.get(f"{leg}_{kind}") or []:
            key = (kind, row_id)
            marks[key] = _Mark((grp, method, path) if method is not None else None, bool(toc),
                               ((kind, grp), pos) if kind in ("history", "docs") and grp is not None else None)
            rows.append((key, float(score)))
        ranked.extend(sorted(rows, key=lambda item: (-item[1], item[0][1])))
    ranked.sort(key=lambda item: -item[1])  # two kinds: one list, best first
    return ranked


def _retrieve(conn: Connection, scopes: Sequence[Scope], space: int | None, dim: int, qvec: str | None,
              query: str | None, k: int, extra: dict[str, str] | None = None,
              extra_params: dict[str, Any] | None = None) -> tuple[Legs, dict[Key, _Mark], dict[str, Any]]:
    """Each retriever's best k rows (a None query or vector skips that retriever), the rows' marks, and the
    values of the `extra` queries, in two round trips: the vector retrievers, the keyword retrievers' term
    statistics and `extra`; then the keyword retrievers, which need those statistics."""
    params: dict[str, Any] = {"k": k, **(extra_params or {})}
    parts: dict[str, str] = {}
    for kind, where, scope_params in scopes:
        params.update(scope_params)  # the kinds' filters name the same values alike
        if qvec is not None and space:
            parts[f"vector_{kind}"] = _vector_part(CORPORA[kind], where, space, dim)
            params["qvec"] = qvec
        if query is not None:
            parts[f"terms_{kind}"] = terms_sql(CORPORA[kind])
            params["query"] = query
    parts.update(extra or {})
    got = _run_parts(conn, parts, params, _hnsw_settings(k) if "qvec" in params else "")
    if query is not None:
        keyword_parts, keyword_params = {}, {"k": k}
        for kind, where, scope_params in scopes:
            built = _keyword_part(CORPORA[kind], where, scope_params, read_terms(got[f"terms_{kind}"]), k, kind[0])
            if built:
                keyword_parts[f"keyword_{kind}"] = built[0]
                keyword_params.update(built[1])
        got.update(_run_parts(conn, keyword_parts, keyword_params))
    marks: dict[Key, _Mark] = {}
    legs: Legs = {}
    if qvec is not None:
        legs["vector"] = _read_leg("vector", scopes, got, marks)
    if query is not None:
        legs["keyword"] = _read_leg("keyword", scopes, got, marks)
    return legs, marks, got


def leg_rankings(conn: Connection, scopes: Sequence[Scope], sid: int, space: int | None, dim: int,
                 qvec: str | None, query: str | None, k: int) -> Legs:
    """Each retriever's best k rows over the kinds searched (a None query or vector skips that retriever)."""
    return _retrieve(conn, scopes, space, dim, qvec, query, k)[0]


def _feedback_leg(conn: Connection, scopes: Sequence[Scope], space: int, dim: int, qvec: np.ndarray,
                  top: Sequence[Key], k: int, marks: dict[Key, _Mark]) -> list[tuple[Key, float]]:
    """Pseudo-relevance feedback: the vector retrievers again, the query vector moved towards the mean stored
    vector of the first pass's best rows (fusion.feedback_vector, here in SQL: cosine distance ignores the
    length, so q / FEEDBACK_WEIGHT + mean is the same direction), in one round trip."""
    rows = []
    params: dict[str, Any] = {"k": k, "qfb": vectors.vector_literal(qvec / FEEDBACK_WEIGHT)}
    for kind in sorted({key[0] for key in top}):
        rows.append(f"SELECT e.embedding FROM {CORPORA[kind].table} x JOIN embeddings e ON e.space_id = {int(space)} "
                    f"AND e.content_hash = x.embed_hash WHERE x.id = ANY(CAST(:top_{kind} AS bigint[]))")
        params[f"top_{kind}"] = [i for kd, i in top if kd == kind]
    moved = (f"WITH moved AS MATERIALIZED (SELECT coalesce(CAST(:qfb AS vector) + avg(t.embedding::vector), "
             f"CAST(:qfb AS vector))::halfvec({int(dim)}) AS v FROM ({' UNION ALL '.join(rows)}) t) ")
    parts = {}
    for kind, where, scope_params in scopes:
        params.update(scope_params)
        parts[f"vector_{kind}"] = _vector_part(CORPORA[kind], where, space, dim, "(SELECT moved.v FROM moved)")
    return _read_leg("vector", scopes, _run_parts(conn, parts, params, _hnsw_settings(k) + moved), marks)


_SPACES: dict[tuple[str, str, str, int], int] = {}  # (database, provider, model, dim) -> embedding space id


def _space(conn: Connection | Any, database: str, embedder: Embedder) -> int | None:
    """The embedder's space id, looked up once per process (search checks it in its first statement)."""
    key = (database, embedder.provider, embedder.model, embedder.dim)
    found = _SPACES.get(key)
    if found is None:
        found = vectors.find_space(conn, embedder.provider, embedder.model, embedder.dim)
        if found is not None:
            _SPACES[key] = found
    return found


def _row_vectors(conn: Connection, space: int, keys: Sequence[Key]) -> dict[Key, np.ndarray]:
    """The stored vectors of these rows in the space (rows without one are left out)."""
    import numpy as np

    found: dict[Key, np.ndarray] = {}
    for kind in {key[0] for key in keys}:
        rows = fetch(conn, f"SELECT x.id, e.embedding::text FROM {CORPORA[kind].table} x JOIN embeddings e "
                           f"ON e.space_id = {int(space)} AND e.content_hash = x.embed_hash "
                           f"WHERE x.id = ANY(CAST(%(ids)s AS bigint[]))",
                     {"ids": [i for kd, i in keys if kd == kind]})
        found.update({(kind, row_id): np.array(v.strip("[]").split(","), dtype=np.float32) for row_id, v in rows})
    return found


class _SpaceChanged(Exception):
    """The cached space id is gone (the space was dropped and made again): search again with a fresh look-up."""


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


def _ranked(db: Database, embedder: Embedder | None, store: StoreRef, query: str, qvec: np.ndarray | None,
            mode: str, limit: int, filters: Filters, k: int, fusion: str, feedback: bool, diverse: bool,
            include_toc: bool) -> tuple[Fused, dict[str, dict[int, dict[str, Any]]], list[str]]:
    """search()'s ranking: the fused rows, their details and the warnings, in four round trips for a hybrid
    search (retrievers and term statistics, keyword retrievers, feedback, details), each statement standing
    alone outside a transaction."""
    kinds = filters.kinds()
    with db.cursor(autocommit=True) as conn:  # a plain cursor: the command line need not import SQLAlchemy
        sid = store.id(conn, create=False)
        if sid is None:  # a typo in --store / LTM_STORE would otherwise look like "no results"
            return [], {}, [missing_store_warning(store.name)]
        space = _space(conn, db.url, embedder) if qvec is not None else None
        dim = embedder.dim if embedder is not None else 0
        scopes = filter_scopes(conn, kinds, filters, sid)
        extra, extra_params = {}, {}
        if qvec is not None:
            from ltm_cli.services import embedspace

            extra["space_now"] = ("(SELECT id FROM embedding_spaces "
                                  "WHERE provider = :provider AND model = :model AND dim = :dim)")
            extra_params = {"provider": embedder.provider, "model": embedder.model, "dim": embedder.dim,
                            "store": sid}
            sample = embedspace.unembedded_sql(space, kinds)
            if sample:
                extra["unembedded"] = (f"(SELECT coalesce(json_agg(json_build_array(u.kind, u.total, u.lacking)), "
                                       f"'[]') FROM ({sample}) u)")
        literal = vectors.vector_literal(qvec) if qvec is not None else None
        try:
            legs, marks, got = _retrieve(conn, scopes, space, dim, literal, query if mode != "vector" else None, k,
                                         extra, extra_params)
        except DataError as exc:
            if space is None:
                raise
            # A database made anew behind the same URL: the cached id may name another space, of another size,
            # and the cast to halfvec(dim) fails before the check below can see it.
            _SPACES.clear()
            raise _SpaceChanged from exc
        warnings = []
        if qvec is not None:
            if got["space_now"] != space and space is not None:
                _SPACES.clear()
                raise _SpaceChanged
            counts = {kind: (total, lacking) for kind, total, lacking in got.get("unembedded") or []}
            said = embedspace.warning(counts, embedder, store, mode)
            warnings = [said] if said else []
        toc_last = not include_toc and "docs" in kinds
        fused = fuse(legs, fusion)
        if toc_last:
            fused = _body_first(fused, marks)
        operations = mode == "hybrid" and fusion == "convex" and _operations_lead(fused[:FEEDBACK_ROWS], marks)
        if operations:
            fused = convex(legs, OPERATION_ALPHA)
        if mode == "hybrid" and feedback and space and FEEDBACK_ROWS and fused and not operations:
            legs["vector"] = _feedback_leg(conn, scopes, space, dim, qvec, [key for key, _, _ in fused[:FEEDBACK_ROWS]],
                                           k, marks)
            fused = fuse(legs, fusion)
        # before operations are grouped: an API operation's card gains from its own details chunk
        fused = _with_neighbours(fused, marks)
        if "docs" in kinds:
            fused = _one_per_operation(fused, marks)
        if diverse and space:
            fused = _diversify(conn, space, fused, limit)
        if toc_last:
            fused = _body_first(fused, marks)
        fused = fused[:limit]
        details = {kind: _details(conn, kind, [i for (kd, i), _, _ in fused if kd == kind], query) for kind in kinds}
    return fused, details, warnings


def search(db: Database, embedder: Embedder | None, store: StoreRef, query: str, *, mode: str = "hybrid",
           limit: int = 10, filters: Filters | None = None, candidates: int = CANDIDATES, context: int = 0,
           fusion: str = "convex", feedback: bool = True, diverse: bool = False,
           include_toc: bool = False, qvec: np.ndarray | None = None) -> Hits:
    """The best `limit` passages or messages for a query; `context` adds neighbouring turns to history hits.

    Hybrid: BM25 and vector legs fused by score (min-max scaled, ALPHA on the vector side), then one round of
    vector pseudo-relevance feedback (FEEDBACK_ROWS best fused rows) and the fusion again. Both choices come
    from bench/retrieval.py (see the README). Contents and index chunks come after the rest (before feedback
    too, so they do not steer it) unless `include_toc`: bench/pdf_questions.py measured it. `qvec`: the query's
    vector when the caller already has it (recall searches twice with one query)."""
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if not query.strip():
        raise InvalidInputError("empty query")
    if limit < 1:
        raise InvalidInputError("--limit must be at least 1")
    filters = filters or Filters()
    filters.kinds()  # an invalid combination fails before the query is embedded
    k = max(candidates, limit)
    if mode == "keyword":
        qvec = None
    elif embedder is None:
        raise InvalidInputError(f"mode {mode} needs an embedder")
    elif qvec is None:
        from ltm_cli.services.embedding import query_vector

        qvec = query_vector(embedder, query)
    ranking = (db, embedder, store, query, qvec, mode, limit, filters, k, fusion, feedback, diverse, include_toc)
    try:
        fused, details, warnings = _ranked(*ranking)
    except _SpaceChanged:  # the space was looked up again: once more
        fused, details, warnings = _ranked(*ranking)
    hits = []
    for (kind, row_id), score, detail in fused:
        row = details[kind].get(row_id)
        if row is None:  # deleted (a concurrent re-ingest) between retrieval and details
            continue
        rank = len(hits) + 1
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
