"""The embedder interface and the tokenizer every chunker counts with."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

TOKENIZER_FILE = Path(__file__).parent / "data" / "minilm-tokenizer.json"


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of one embedding space."""

    provider: str  # "local", "openai", "hash"
    model: str  # the model name; with provider and dim it names the embedding space
    dim: int
    max_tokens: int  # longest input (in this embedder's tokens) it embeds without truncation
    batch_size: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """An (n, dim) float32 array, row i the unit vector of texts[i]."""
        ...


@functools.lru_cache(maxsize=1)
def bert_tokenizer() -> Tokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer, shipped with ltm (Apache-2.0, see data/NOTICE)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Token counts (without [CLS]/[SEP]) by the bundled WordPiece tokenizer.

    WordPiece splits more finely than OpenAI's BPE, so for OpenAI models this over-counts: a safe
    approximation for staying under an input limit.
    """
    if not texts:
        return []
    encodings = bert_tokenizer().encode_batch(list(texts), add_special_tokens=False)
    return [len(e.ids) for e in encodings]


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)
