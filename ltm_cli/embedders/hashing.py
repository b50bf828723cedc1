"""A deterministic, dependency-free, NON-semantic embedder for tests and air-gapped minimal use."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ltm_cli.embedders.base import normalize_rows

_WORD = re.compile(r"\w+", re.UNICODE)
CACHE_FEATURES = 500_000  # features whose bucket is remembered (~100 MB at most)


class HashEmbedder:
    """Feature hashing of lower-cased words and word pairs into `dim` signed buckets.

    Texts sharing words get similar vectors, so tests of the vector path are meaningful, but there is no
    understanding of meaning: synonyms score zero. Never use it for real retrieval.
    """

    provider = "hash"
    model = "feature-hash-v1"
    max_tokens = 8192
    batch_size = 256

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim
        self._buckets: dict[str, int] = {}  # feature -> signed bucket + 1; words recur, so most are looked up

    def _features(self, text: str) -> list[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    def _bucket(self, feature: str) -> int:
        value = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        bucket = value % self.dim + 1
        return bucket if (value >> 63) & 1 else -bucket

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), self.dim), dtype=np.float32)
        if len(self._buckets) > CACHE_FEATURES:
            self._buckets.clear()
        buckets = self._buckets
        for row, text in enumerate(texts):
            signed = [buckets.get(f) or buckets.setdefault(f, self._bucket(f)) for f in self._features(text)]
            if signed:
                found = np.asarray(signed, dtype=np.int64)
                # Counts of +1 and -1 are exact in any order: the same vectors as one += per feature.
                matrix[row] = np.bincount(np.abs(found) - 1, weights=np.sign(found), minlength=self.dim)
        return normalize_rows(matrix)
