"""Ingest speed (#12) without giving up what made it slow: the same chunks and vectors, whole documents."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from tests.conftest import SHARED_DATA


def _loaded(paths):
    from ltm_cli.loaders import LoadError, detect, load

    for path in paths:
        data = path.read_bytes()
        kind = detect(path, data)
        if kind is None:
            continue
        try:
            yield load(path, data, kind)
        except LoadError:
            continue


REAL_FILES = [
    *sorted((SHARED_DATA / "markdown" / "rust-book").rglob("*.md"))[:40],
    *sorted((SHARED_DATA / "pdf" / "odd-encoding").glob("*.pdf")),
    SHARED_DATA / "pdf" / "manuals" / "bashref.info.txt",
    SHARED_DATA / "openapi" / "docker-engine" / "swagger.yaml",
]


@pytest.mark.parametrize("target,overlap,max_tokens", [(200, 32, 254), (64, 8, 100), (512, 64, 8192)])
def test_counting_sentences_from_the_blocks_token_offsets_gives_the_same_chunks(target, overlap, max_tokens):
    """Over-long blocks are cut into sentences counted from one tokenization of the block; the chunks must be
    exactly those of tokenizing every sentence again (Arabic, CJK, Type3 PDFs, code, long lines)."""
    from ltm_cli.chunking import chunk_sections
    from ltm_cli.embedders.base import count_tokens

    docs = list(_loaded(REAL_FILES))
    assert len(docs) > 40
    split = 0
    for doc in docs:
        fast = chunk_sections(doc.sections, target=target, overlap=overlap, max_tokens=max_tokens)
        slow = chunk_sections(doc.sections, target=target, overlap=overlap, max_tokens=max_tokens,
                              count=count_tokens)
        assert fast == slow
        split += len(fast) > len(doc.sections)
    assert split > 10  # the over-long path really ran


def _hash_embed_reference(texts, dim=384):
    """HashEmbedder as first written (one blake2b and one += per feature): its vectors are a stored space."""
    matrix = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        words = [w.lower() for w in re.findall(r"\w+", text)]
        for feature in words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]:
            value = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
            matrix[row, value % dim] += 1.0 if (value >> 63) & 1 else -1.0
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32)


def test_the_hash_embedder_gives_the_vectors_it_always_gave():
    from ltm_cli.embedders.hashing import HashEmbedder

    texts = [p.read_text(errors="replace")[:3000] for p in REAL_FILES[:30]]
    texts += ["", "   ", "x", "İstanbul ÇA ß straße", "the the the the", "日本語のテキスト", "a b " * 500]
    embedder = HashEmbedder()
    first = embedder.embed(texts)
    again = embedder.embed(list(reversed(texts)))[::-1]  # second call: buckets come from the cache
    assert np.array_equal(first, _hash_embed_reference(texts))
    assert np.array_equal(again, first)
    assert np.array_equal(HashEmbedder(dim=64).embed(texts), _hash_embed_reference(texts, 64))
