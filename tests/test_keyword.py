"""The BM25 arithmetic that needs no database: idf and the choice of terms a query matches on."""

from __future__ import annotations

import math

import pytest

from ltm_cli.services.filters import like
from ltm_cli.services.keyword import idfs, matching_terms


def test_idf_is_bm25s_and_never_negative_when_statistics_lag_the_counts():
    assert idfs(100, [("zebra", 3)]) == {"zebra": pytest.approx(math.log(1 + 97.5 / 3.5))}
    stale = idfs(10, [("common", 40)])  # pg_stats said 10 rows, the exact count found 40 with the word
    assert stale["common"] >= 0


def test_a_query_matches_on_its_rarest_terms_within_the_posting_budget():
    terms = [("the", 5000), ("zebra", 3), ("feed", 400), ("animal", 1900)]
    assert matching_terms(terms, budget=2000) == ["zebra", "feed"]
    assert matching_terms([("the", 5000)], budget=2000) == ["the"]  # always at least one term


def test_a_glob_becomes_a_like_pattern_with_like_wildcards_escaped():
    assert like("*/docs/?.md") == "%/docs/_.md"
    assert like("100%_done\\") == "100\\%\\_done\\\\"
