"""Ingest speed (#12) without giving up what made it slow: the same chunks and vectors, whole documents."""

from __future__ import annotations

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
