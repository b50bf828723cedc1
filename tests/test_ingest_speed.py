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


def _wal_fsyncs(memory) -> int:
    """WAL fsyncs so far by the whole server. A backend reports its counts when it exits (or within seconds
    while idle): close our connections and wait for their backends to go first."""
    import time

    from sqlalchemy import text

    memory.db.dispose()
    with memory.db.connect() as conn:
        for _ in range(100):
            others = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ltm' "
                                       "AND pid <> pg_backend_pid()")).scalar()
            if not others:
                break
            time.sleep(0.05)
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
        return int(conn.execute(text("SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal'"))
                   .scalar())


def test_an_ingest_of_many_small_files_does_not_wait_for_a_wal_flush_per_file(tmp_path, store):
    from ltm_cli import Memory

    files = 300
    for i in range(files):
        (tmp_path / f"note{i}.md").write_text(f"# Note {i}\n\nA short note about topic{i} and its details.\n")
    with Memory.open() as memory:
        before = _wal_fsyncs(memory)
        summary = memory.docs.ingest([str(tmp_path)])
        fsyncs = _wal_fsyncs(memory) - before
    assert summary.count("added") == files
    # A durable commit per file made at least one fsync each; now a few commits wait for one, and the WAL
    # writer flushes the rest in the background (every 200 ms while there is WAL to write).
    assert fsyncs < files / 3, fsyncs


def test_a_document_the_server_refuses_fails_alone_and_its_batch_is_kept(cli, tmp_path, store):
    from sqlalchemy import text

    from ltm_cli import Memory

    for i in range(6):
        (tmp_path / f"doc{i}.md").write_text(f"# Doc {i}\n\n" + ("POISONED " if i == 3 else "") + f"body {i}\n")
    with Memory.open() as memory, memory.db.connect() as conn:
        conn.execute(text("""
            CREATE FUNCTION ltm_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.text LIKE '%POISONED%' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
            RETURN NEW; END $$;
            CREATE TRIGGER ltm_test_refuse BEFORE INSERT ON chunks FOR EACH ROW EXECUTE FUNCTION ltm_test_refuse();
        """))
    try:
        done = cli("ingest", str(tmp_path), "--json")
    finally:
        with Memory.open() as memory, memory.db.connect() as conn:
            conn.execute(text("DROP TRIGGER ltm_test_refuse ON chunks; DROP FUNCTION ltm_test_refuse()"))
    assert done.exit_code == 1, done.stderr
    statuses = {f["display"].rsplit("/", 1)[-1]: (f["status"], f["error"]) for f in done.json()["files"]}
    assert statuses.pop("doc3.md") == ("failed", "not stored: refused by a test trigger")
    assert {s for s, _ in statuses.values()} == {"added"}
    docs = cli("docs", "list", "--json").json()
    assert sorted(d["source"].rsplit("/", 1)[-1] for d in docs) == [f"doc{i}.md" for i in (0, 1, 2, 4, 5)]
    assert all(d["chunks"] == 1 for d in docs)
