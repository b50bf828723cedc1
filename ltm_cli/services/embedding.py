"""Embed-and-cache: vectors for texts in an embedder's space, computed once per content hash, for every kind."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import EmbeddingError
from ltm_cli.storage import vectors

if TYPE_CHECKING:
    import numpy as np

    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

EMBED_BATCH = 256  # texts handed to the embedder at once (it batches further inside)

# The one progress-callback shape of the service layer: an event name and what it carries, e.g.
# ("embedding", {"texts": 256}), ("embedded", {"texts": 256, "seconds": 1.9}), ("file", {...}).
Progress = Callable[[str, dict[str, Any]], None]


def no_progress(event: str, info: dict[str, Any]) -> None:
    return None


def content_hash(content: str | bytes) -> bytes:
    """SHA-256 of text (as UTF-8) or bytes: the key of the embedding cache, where identical text is embedded
    once per space whatever stores use it, and how a file is known to be unchanged."""
    return hashlib.sha256(content.encode("utf-8") if isinstance(content, str) else content).digest()


@dataclass(frozen=True)
class Embedded:
    computed: int  # vectors computed now (or that would be, on a dry run)
    cached: int  # vectors already in the cache


def space_of(db: Database, embedder: Embedder) -> int:
    """The embedder's space id, made on first use."""
    with db.connect() as conn:
        return vectors.ensure_space(conn, embedder.provider, embedder.model, embedder.dim)


def embed_and_cache(db: Database, embedder: Embedder, space: int, texts: Mapping[bytes, str], *,
                    dry_run: bool = False, progress: Progress | None = None,
                    batch: int = EMBED_BATCH) -> Embedded:
    """Compute and store the vectors of `texts` (content hash -> text) that the space does not have yet.

    Each batch is committed on its own, before the rows that will use it: a vector no row ever uses is a
    harmless cache entry (`ltm db gc` removes it), while a row whose vector is missing would not be found."""
    tick = progress or no_progress
    with db.connect() as conn:
        todo = vectors.missing(conn, space, list(texts))
    order = [h for h in texts if h in todo]
    if dry_run:
        return Embedded(len(order), len(texts) - len(order))
    for start in range(0, len(order), batch):
        part = order[start:start + batch]
        tick("embedding", {"texts": len(part)})
        started = time.perf_counter()
        matrix = checked(embedder, embedder.embed([texts[h] for h in part]), len(part))
        tick("embedded", {"texts": len(part), "seconds": time.perf_counter() - started})
        with db.connect() as conn:
            vectors.write(conn, space, part, matrix)
    return Embedded(len(order), len(texts) - len(order))


def checked(embedder: Embedder, matrix: np.ndarray, rows: int) -> np.ndarray:
    """A provider's answer, refused unless it is `rows` finite vectors of the space's dimension."""
    import numpy as np

    where = f"embedder {embedder.provider}:{embedder.model}"
    shape = getattr(matrix, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != rows:
        raise EmbeddingError(f"{where} returned {shape[0] if shape else 'no'} vector(s) for {rows} text(s)")
    if shape[1] != embedder.dim:
        raise EmbeddingError(f"{where} returned vectors of dimension {shape[1]}, expected {embedder.dim}",
                             hint="check LTM_EMBEDDING_DIMENSIONS and the model name")
    if not np.isfinite(matrix).all():
        raise EmbeddingError(f"{where} returned a vector containing NaN or infinity")
    return matrix


def query_vector(embedder: Embedder, query: str) -> np.ndarray:
    """One query's vector, checked like stored ones."""
    return checked(embedder, embedder.embed([query]), 1)[0]
