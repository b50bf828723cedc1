"""A deterministic, dependency-free, NON-semantic embedder for tests and air-gapped minimal use."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ltm_cli.embedders.base import normalize_rows

_WORD = re.compile(r"\w+", re.UNICODE)


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

    def _features(self, text: str) -> list[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                matrix[row, value % self.dim] += 1.0 if (value >> 63) & 1 else -1.0
        return normalize_rows(matrix)
