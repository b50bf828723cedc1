"""Result fusion and re-ranking as pure functions over plain lists and arrays: RRF, score fusion, query-vector
feedback, neighbour boosting and MMR. search.py fetches what they need from the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

RRF_K = 60
ALPHA = 0.55  # weight of the vector side in score fusion
FEEDBACK_WEIGHT = 1.0  # pseudo-relevance feedback: the mean of the best rows is added to the unit query vector
NEIGHBOUR_WEIGHT = 0.4  # share of the best neighbouring turn's score a conversation turn gains
DOC_NEIGHBOUR_WEIGHT = 0.2  # the same for a document chunk and the chunks before and after it (#15)
MMR_LAMBDA = 0.7  # --diverse: weight of relevance against similarity to what is already picked
DUPLICATE_SIMILARITY = 0.95  # --diverse: a cosine this close to a pick makes a row a near-copy of it

Key = tuple[str, int]  # (kind, row id)
Legs = dict[str, list[tuple[Key, float]]]  # each retriever's (key, score) list, best first
Fused = list[tuple[Key, float, dict[str, tuple[int, float]]]]  # (key, fused score, {leg: (rank, score)})


def _ordered(fused: dict[Key, float], detail: dict[Key, dict[str, tuple[int, float]]]) -> Fused:
    """Best score first; ties broken by key, so equal scores always come back in the same order."""
    ordered = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [(key, score, detail[key]) for key, score in ordered]


def rrf(legs: Legs, k: int = RRF_K, weights: dict[str, float] | None = None) -> Fused:
    """Reciprocal rank fusion: score = sum over legs of weight / (k + rank)."""
    fused: dict[Key, float] = {}
    detail: dict[Key, dict[str, tuple[int, float]]] = {}
    for leg, hits in legs.items():
        weight = (weights or {}).get(leg, 1.0)
        for rank, (key, score) in enumerate(hits, start=1):
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
            detail.setdefault(key, {})[leg] = (rank, score)
    return _ordered(fused, detail)


def convex(legs: Legs, alpha: float = 0.5) -> Fused:
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
    return _ordered(fused, detail)


def fuse(legs: Legs, fusion: str = "convex") -> Fused:
    if fusion == "rrf":
        return rrf(legs)
    return convex(legs, ALPHA)


def feedback_vector(qvec: np.ndarray, rows: Sequence[np.ndarray], weight: float = FEEDBACK_WEIGHT) -> np.ndarray:
    """Pseudo-relevance feedback: the query vector moved towards the mean of the best rows' vectors, as a unit
    vector (no rows: the query vector unchanged)."""
    import numpy as np

    if not len(rows):
        return qvec
    moved = qvec + weight * np.mean(rows, axis=0)
    return moved / np.linalg.norm(moved)


def boost_neighbours(fused: Fused, place: Mapping[Key, tuple[Any, int]], weight: float = NEIGHBOUR_WEIGHT) -> Fused:
    """Each row with a place (conversation, seq) gains `weight` times the better of the fused scores of the turns
    just before and after it, when those are in `fused` too; re-sorted best first.

    The answer to a question is usually the turn after it, and one topic spans several turns (measured on
    LoCoMo). Rows without a place (documents) keep their score."""
    score_at = {place[key]: score for key, score, _ in fused if key in place}
    out = []
    for key, score, detail in fused:
        if key in place:
            conversation, seq = place[key]
            score += weight * max(score_at.get((conversation, seq - 1), 0.0),
                                  score_at.get((conversation, seq + 1), 0.0))
        out.append((key, score, detail))
    return sorted(out, key=lambda item: (-item[1], item[0]))


def mmr(relevance: Sequence[float], vectors: np.ndarray, limit: int, lam: float = MMR_LAMBDA,
        duplicate: float = DUPLICATE_SIMILARITY) -> list[int]:
    """Maximal marginal relevance: the positions of up to `limit` picks, in pick order.

    Each pick trades its relevance (scaled so the best is 1) against its cosine to the nearest earlier pick
    (`lam` on relevance); rows at least `duplicate` close to a pick wait until nothing else is left, so
    near-copies stop filling the list. `vectors` holds one unit row per candidate (zeros where unknown)."""
    import numpy as np

    scaled = np.array(relevance, dtype=np.float32)
    scaled /= scaled.max() if scaled.size and scaled.max() > 0 else 1.0
    closest = np.zeros(len(scaled), dtype=np.float32)  # each candidate's similarity to its nearest pick so far
    open_ = np.ones(len(scaled), dtype=bool)
    picks: list[int] = []
    while open_.any() and len(picks) < limit:
        gain = np.where(open_, lam * scaled - (1 - lam) * closest, -np.inf)
        fresh = open_ & (closest < duplicate)
        if fresh.any():
            gain = np.where(fresh, gain, -np.inf)
        pick = int(np.argmax(gain))
        open_[pick] = False
        picks.append(pick)
        closest = np.maximum(closest, vectors @ vectors[pick])
    return picks
