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


COUNT_BATCH_CHARS = 64 * 1024  # characters tokenized at once: an Encoding costs ~100 bytes per token


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Token counts (without [CLS]/[SEP]) by the bundled WordPiece tokenizer.

    WordPiece splits more finely than OpenAI's BPE, so for OpenAI models this over-counts: a safe
    approximation for staying under an input limit. Memory stays bounded whatever the input: texts are
    tokenized in batches of about COUNT_BATCH_CHARS, and a longer text in whitespace-cut slices (WordPiece
    splits on whitespace first, so the counts add up exactly)."""
    return [n for n, _ in count_tokens_with_starts(texts, keep_over=None)]


def count_tokens_with_starts(texts: Sequence[str], keep_over: int | None) -> list[tuple[int, list[int] | None]]:
    """count_tokens, plus where each token starts (character offsets) for the texts of more than `keep_over`
    tokens (None: for none), so a chunker can count any whitespace-bounded piece of such a text without
    tokenizing it again. A text longer than COUNT_BATCH_CHARS gets its count only."""
    out: list[tuple[int, list[int] | None]] = []
    batch: list[str] = []
    size = 0
    for text in texts:
        if len(text) > COUNT_BATCH_CHARS:
            out.extend(_count_batch(batch, keep_over))
            batch, size = [], 0
            out.append((sum(_count_batch([piece], None)[0][0] for piece in _slices(text, COUNT_BATCH_CHARS)), None))
            continue
        if size + len(text) > COUNT_BATCH_CHARS and batch:
            out.extend(_count_batch(batch, keep_over))
            batch, size = [], 0
        batch.append(text)
        size += len(text)
    out.extend(_count_batch(batch, keep_over))
    return out


def _count_batch(texts: list[str], keep_over: int | None) -> list[tuple[int, list[int] | None]]:
    if not texts:
        return []
    out: list[tuple[int, list[int] | None]] = []
    for encoding in bert_tokenizer().encode_batch(texts, add_special_tokens=False):
        n = len(encoding.ids)
        out.append((n, [start for start, _ in encoding.offsets] if keep_over is not None and n > keep_over
                    else None))
    return out


def _slices(text: str, size: int) -> list[str]:
    """`text` cut at whitespace into pieces of about `size` characters (a piece with no whitespace at all is
    cut hard: such a run is one over-long word either way)."""
    pieces = []
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            end = space + 1 if space > start else end
        pieces.append(text[start:end])
        start = end
    return pieces


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)
