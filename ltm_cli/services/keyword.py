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


def _rank(weights: str, lexeme_param: str) -> str:
    return f"ts_rank('{weights}'::float4[], x.tsv, CAST(:{lexeme_param} AS tsquery))"


def _decoded(rank: str) -> str:
    # rank 0 (absent) decodes to round(0.108) = 0
    return f"round(1 / ({_ZETA2} * (1 - {rank})) - 0.5)"


def terms_sql(corpus: Corpus) -> str:
    """A JSON object for the query `:query` over the store `:store`: the store's row count `n`, its mean length
    `avg`, and `terms`, each query lexeme (in query order) with its document frequency.

    Frequent lexemes take their frequency from the planner's statistics (ANALYZE keeps the most common lexemes
    of every tsvector column) when the store holds most of the table, so that the table's frequencies are the
    store's; the rest are counted exactly, which the GIN index (rare words) or the store index (a small store)
    makes cheap. The store's size comes from the statistics when it is one of the table's most common stores
    (else it is small enough to count), the mean length from a bounded sample: BM25 needs both only roughly.
    pg_stats is read once (its planning is most of this query's cost), so the statement can ride along with
    other work in one round trip."""
    table = corpus.table
    return f"""(WITH st AS MATERIALIZED (
                SELECT s.attname, s.most_common_vals::text AS vals, s.most_common_freqs AS freqs,
                       s.most_common_elems::text::text[] AS elems, s.most_common_elem_freqs AS elem_freqs
                FROM pg_stats s WHERE s.schemaname = current_schema() AND s.tablename = '{table}'
                  AND s.attname IN ('store_id', 'tsv')),
             rel AS MATERIALIZED (SELECT reltuples FROM pg_class WHERE oid = '{table}'::regclass),
             size AS MATERIALIZED (SELECT coalesce(
                (SELECT round(rel.reltuples * st.freqs[array_position(st.vals::int[], CAST(:store AS int))])
                 FROM st, rel WHERE st.attname = 'store_id' AND rel.reltuples > 0),
                (SELECT count(*) FROM {table} WHERE store_id = :store)) AS n),
             len AS MATERIALIZED (SELECT coalesce(avg(token_count), 0) AS avg FROM (SELECT token_count
                 FROM {table} WHERE store_id = :store LIMIT 2000) AS sample),
             q AS (SELECT u.lexeme, u.positions[1] AS position
                   FROM unnest(to_tsvector('{TS_CONFIG}'::regconfig, :query)) AS u),
             t AS (SELECT q.lexeme, q.position, coalesce(
                    (SELECT round(st.elem_freqs[array_position(st.elems, q.lexeme)] * size.n) FROM st, rel
                     WHERE st.attname = 'tsv' AND size.n >= {STATS_SHARE} * rel.reltuples),
                    (SELECT count(*) FROM {table} x
                     WHERE x.store_id = :store AND x.tsv @@ quote_literal(q.lexeme)::tsquery)) AS df
                   FROM q, size)
        SELECT json_build_object('n', size.n, 'avg', len.avg, 'terms',
                                 coalesce((SELECT json_agg(json_build_array(t.lexeme, t.df)
                                                           ORDER BY t.position, t.lexeme) FROM t), '[]'))
        FROM size, len)"""


def read_terms(found: dict[str, Any]) -> tuple[int, float, list[tuple[str, int]]]:
    """terms_sql's object as (n, avg, [(lexeme, df), ...])."""
    return int(found["n"]), float(found["avg"]), [(lexeme, int(df)) for lexeme, df in found["terms"]]


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


def keyword_sql(corpus: Corpus, where: list[str], params: dict[str, Any], n: int, avg_len: float,
                terms: Sequence[tuple[str, int]], k: int, columns: str = "",
                tag: str = "") -> tuple[str, dict[str, Any]] | None:
    """The best k rows by BM25 as SQL selecting `id`, `score` (and `columns`), with its parameters; None when no
    query term occurs in the store.

    The term frequency of term i is decoded from ts_rank; the heading ('A') occurrences are read only for the
    rows that hold the term at all, and absent terms add nothing without arithmetic: most (row, term) pairs
    of a matching row are absent ones. `tag` prefixes this query's own parameter names, so that the queries of
    several tables can share one statement."""
    terms = sorted(((lexeme, df) for lexeme, df in terms if df > 0), key=lambda item: item[1])
    if not terms:
        return None
    weights = idfs(n, terms)
    args = {**params, "k": k, f"{tag}avg": max(avg_len, 1.0),
            f"{tag}mq": " | ".join(map(_quoted, matching_terms(terms)))}
    ranks, tfs, parts = [], [], []
    norm = f"{BM25_K1} * (1 - {BM25_B} + {BM25_B} * x.token_count::float8 / :{tag}avg)"
    for i, (lexeme, _) in enumerate(terms):
        name = f"{tag}l{i}"
        args[name] = _quoted(lexeme)
        ranks.append(f"{_rank('{1,1,1,1}', name)} AS r{i}")
        tfs.append(f"CASE WHEN r.r{i} > 0 THEN {_decoded(f'r.r{i}')} + {HEADING_BOOST - 1} * "
                   f"{_decoded(_rank('{0,0,0,1}', name))} ELSE 0 END AS tf{i}")
        parts.append(f"CASE WHEN t.tf{i} > 0 THEN {weights[lexeme]!r} * t.tf{i} * {BM25_K1 + 1} / (t.tf{i} + {norm}) "
                     f"ELSE 0 END")
    sql = f"""
        SELECT x.id, {' + '.join(parts)} AS score{columns}
        FROM {corpus.table} x {corpus.join_for(where)}
        CROSS JOIN LATERAL (SELECT {', '.join(ranks)} OFFSET 0) r
        CROSS JOIN LATERAL (SELECT {', '.join(tfs)} OFFSET 0) t
        WHERE {' AND '.join(where)} AND x.tsv @@ CAST(:{tag}mq AS tsquery)
        ORDER BY score DESC, x.id LIMIT :k"""
    return sql, args

