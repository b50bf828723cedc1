"""The keyword retriever: BM25 computed in SQL from the tsvector columns.

Document frequencies come from pg_stats or exact counts, term frequencies are decoded from ts_rank (heading and
speaker terms count extra), lengths come from token_count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ltm_cli.storage.names import TS_CONFIG

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.services.filters import Corpus

BM25_K1 = 1.2
BM25_B = 0.75
HEADING_BOOST = 2.0  # a title/heading (or speaker) occurrence counts as this many body occurrences
STATS_SHARE = 0.5  # below this share of the table, a store's word counts are counted, not taken from pg_stats
POSTING_BUDGET = 2_000  # match on the rarest query terms whose postings sum to this; the rest only score

# ts_rank of a one-lexeme query with uniform weights w is w * sum(1/j^2, j = 1..tf) / (pi^2/6); since
# sum(1/j^2, j = 1..n) ~ pi^2/6 - 1/(n + 1/2), the term frequency is recovered exactly (after rounding) as
# 1 / ((pi^2/6) * (1 - rank)) - 1/2. Weights {0,0,0,1} count only the 'A' (heading, speaker) occurrences,
# which come first in the tsvector. This reads two binary searches per term instead of unnesting the vector.
_ZETA2 = 1.6449340668


def _tf(weights: str, lexeme_param: str) -> str:
    # rank 0 (absent) decodes to round(0.108) = 0: no CASE, so ts_rank runs once
    return (f"round(1 / ({_ZETA2} * (1 - ts_rank('{weights}'::float4[], x.tsv, CAST(:{lexeme_param} AS tsquery))))"
            f" - 0.5)")


def query_terms(conn: Connection, corpus: Corpus, sid: int, query: str) -> tuple[int, float, list[tuple[str, int]]]:
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


def idfs(n: int, terms: Sequence[tuple[str, int]]) -> dict[str, float]:
    """BM25's idf of each (lexeme, document frequency) among n rows (terms with df 0 must be left out)."""
    n = max(n, max((df for _, df in terms), default=0))  # statistics older than the exact counts: idf stays >= 0
    return {lexeme: math.log(1.0 + (n - df + 0.5) / (df + 0.5)) for lexeme, df in terms}


def matching_terms(terms: Sequence[tuple[str, int]], budget: int = POSTING_BUDGET) -> list[str]:
    """The rarest lexemes whose postings fit the budget (always at least one): the rows a query scores.

    A word found in most rows adds little to BM25, and scoring every row that has it is what makes plain
    ts_rank slow."""
    matching, postings = [], 0
    for lexeme, df in sorted(terms, key=lambda item: item[1]):
        if matching and postings + df > budget:
            break
        matching.append(lexeme)
        postings += df
    return matching


def _quoted(lexeme: str) -> str:
    return "'" + lexeme.replace("'", "''") + "'"


def keyword_leg(conn: Connection, corpus: Corpus, sid: int, where: list[str], params: dict[str, Any], query: str,
                k: int) -> list[tuple[int, float]]:
    """The best k rows by BM25, best first: (row id, score)."""
    from sqlalchemy import text

    n, avg_len, terms = query_terms(conn, corpus, sid, query)
    terms = sorted(((lexeme, df) for lexeme, df in terms if df > 0), key=lambda item: item[1])
    if not terms:
        return []
    weights = idfs(n, terms)
    args = {**params, "k": k, "avg": max(avg_len, 1.0), "mq": " | ".join(map(_quoted, matching_terms(terms)))}
    tfs, parts = [], []
    for i, (lexeme, _) in enumerate(terms):
        args[f"l{i}"] = _quoted(lexeme)
        tfs.append(f"{_tf('{1,1,1,1}', f'l{i}')} + {HEADING_BOOST - 1} * {_tf('{0,0,0,1}', f'l{i}')} AS tf{i}")
        parts.append(f"{weights[lexeme]!r} * t.tf{i} * {BM25_K1 + 1} / (t.tf{i} + {BM25_K1} * (1 - {BM25_B} + "
                     f"{BM25_B} * x.token_count::float8 / :avg))")
    rows = conn.execute(text(f"""
        SELECT x.id, {' + '.join(parts)} AS score
        FROM {corpus.table} x {corpus.join} CROSS JOIN LATERAL (SELECT {', '.join(tfs)} OFFSET 0) t
        WHERE {' AND '.join(where)} AND x.tsv @@ CAST(:mq AS tsquery)
        ORDER BY score DESC, x.id LIMIT :k"""), args).all()
    return [(r.id, float(r.score)) for r in rows]
