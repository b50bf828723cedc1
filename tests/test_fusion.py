"""The fusion and re-ranking arithmetic (RRF, score fusion, feedback, neighbours, MMR) on plain lists, no database."""

from __future__ import annotations

import numpy as np
import pytest

from ltm_cli.services.fusion import boost_neighbours, convex, feedback_vector, fuse, mmr, rrf


def keys(fused) -> list:
    return [key for key, _, _ in fused]


def test_rrf_ranks_rows_found_by_both_legs_first_and_keeps_each_legs_rank_and_score():
    legs = {"vector": [(("docs", 1), 0.9), (("docs", 2), 0.8)],
            "keyword": [(("docs", 2), 7.0), (("docs", 3), 5.0)]}
    fused = rrf(legs, k=60)
    assert keys(fused) == [("docs", 2), ("docs", 1), ("docs", 3)]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0][2] == {"vector": (2, 0.8), "keyword": (1, 7.0)}


def test_rrf_breaks_ties_by_key_whatever_order_the_legs_come_in():
    first = {"vector": [(("docs", 9), 0.9)], "keyword": [(("docs", 4), 3.0)]}
    second = {"keyword": [(("docs", 4), 3.0)], "vector": [(("docs", 9), 0.9)]}
    assert keys(rrf(first)) == keys(rrf(second)) == [("docs", 4), ("docs", 9)]


def test_rrf_leg_weights_move_a_leg_ahead():
    legs = {"vector": [(("docs", 1), 0.9)], "keyword": [(("docs", 2), 3.0)]}
    assert keys(rrf(legs, weights={"vector": 2.0}))[0] == ("docs", 1)
    assert keys(rrf(legs, weights={"keyword": 2.0}))[0] == ("docs", 2)


def test_convex_scales_each_leg_to_unit_range_and_weights_the_vector_side_by_alpha():
    legs = {"vector": [(("docs", 1), 0.9), (("docs", 2), 0.5), (("docs", 3), 0.1)],
            "keyword": [(("docs", 3), 12.0), (("docs", 1), 2.0)]}
    fused = dict((key, score) for key, score, _ in convex(legs, alpha=0.6))
    assert fused[("docs", 1)] == pytest.approx(0.6 * 1.0 + 0.4 * 0.0)
    assert fused[("docs", 2)] == pytest.approx(0.6 * 0.5)
    assert fused[("docs", 3)] == pytest.approx(0.6 * 0.0 + 0.4 * 1.0)


def test_convex_gives_a_single_or_all_equal_score_full_weight_and_skips_empty_legs():
    single = convex({"vector": [(("docs", 1), 0.3)], "keyword": []}, alpha=0.55)
    assert single == [(("docs", 1), pytest.approx(0.55), {"vector": (1, 0.3)})]
    equal = convex({"keyword": [(("docs", 1), 2.0), (("docs", 2), 2.0)]}, alpha=0.55)
    assert [score for _, score, _ in equal] == [pytest.approx(0.45)] * 2
    assert convex({"vector": [], "keyword": []}) == []


def test_fuse_chooses_rrf_or_score_fusion_by_name():
    legs = {"vector": [(("docs", 1), 0.9), (("docs", 2), 0.1)], "keyword": [(("docs", 2), 4.0)]}
    assert fuse(legs, "rrf") == rrf(legs)
    assert keys(fuse(legs)) == keys(convex(legs, 0.55))


def test_feedback_moves_the_query_towards_the_mean_of_the_rows_and_returns_a_unit_vector():
    query = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    rows = [np.array([0.0, 1.0, 0.0], dtype=np.float32), np.array([0.0, 0.0, 1.0], dtype=np.float32)]
    moved = feedback_vector(query, rows, weight=1.0)
    assert np.linalg.norm(moved) == pytest.approx(1.0)
    assert moved == pytest.approx(np.array([1.0, 0.5, 0.5]) / np.sqrt(1.5))
    assert feedback_vector(query, []) is query  # nothing to learn from: the query as it was


def test_a_turn_gains_a_share_of_its_best_neighbours_score_and_documents_do_not():
    fused = [(("history", 10), 1.0, {}), (("docs", 5), 0.6, {}), (("history", 11), 0.5, {}),
             (("history", 30), 0.55, {})]
    place = {("history", 10): ("c1", 4), ("history", 11): ("c1", 5), ("history", 30): ("c2", 5)}
    boosted = {key: score for key, score, _ in boost_neighbours(fused, place, weight=0.4)}
    assert boosted[("history", 11)] == pytest.approx(0.5 + 0.4 * 1.0)  # the turn after a strong match
    assert boosted[("history", 10)] == pytest.approx(1.0 + 0.4 * 0.5)
    assert boosted[("history", 30)] == pytest.approx(0.55)  # same seq, other conversation: no neighbour
    assert boosted[("docs", 5)] == pytest.approx(0.6)
    assert keys(boost_neighbours(fused, place, weight=0.4))[:2] == [("history", 10), ("history", 11)]


def test_mmr_puts_near_duplicates_of_a_pick_last():
    copy = np.array([1.0, 0.0], dtype=np.float32)
    other = np.array([0.6, 0.8], dtype=np.float32)
    vectors = np.stack([copy, copy, copy, other])
    assert mmr([1.0, 0.99, 0.98, 0.5], vectors, limit=4) == [0, 3, 1, 2]


def test_mmr_with_all_relevance_weight_keeps_relevance_order_and_stops_at_limit():
    vectors = np.eye(4, dtype=np.float32)
    assert mmr([0.2, 0.9, 0.5, 0.7], vectors, limit=3, lam=1.0) == [1, 3, 2]
    assert mmr([], np.zeros((0, 2), dtype=np.float32), limit=3) == []
