"""Ingest benchmark: pipeline alone (hash embedder), end to end (local model), raw model speed, storage alone.

    python bench/ingest.py [--quick] [--storage-rows N]

Starts a throwaway embedded server in a temporary directory, ingests real corpora from ../shared/data through
the normal service layer, prints the figures and writes them to bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

if TYPE_CHECKING:
    from ltm_cli import Memory

DATA = ROOT.parent / "shared" / "data"

CORPORA = {
    "pdf-bashref": [DATA / "pdf" / "manuals" / "bashref.pdf"],
    "markdown-fastapi": [DATA / "markdown" / "fastapi-docs-en"],
    "openapi-stripe": [DATA / "openapi" / "stripe" / "spec3.yaml"],
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ingest(memory: Memory, paths: list[Path]) -> dict:
    start = time.perf_counter()
    summary = memory.docs.ingest([str(p) for p in paths])
    seconds = time.perf_counter() - start
    pages = sum(int(f.title is not None) for f in summary.files)
    return {"seconds": round(seconds, 2), "files": len(summary.files), "chunks": summary.chunks,
            "embedded": summary.embedded, "failed": len(summary.failed), "docs": pages,
            "chunks_per_s": round(summary.chunks / seconds, 1)}


def corpus_texts(paths: list[Path], config) -> list[str]:
    """The exact texts the pipeline embeds, to time the model alone on them."""
    from ltm_cli.chunking import chunk_sections
    from ltm_cli.loaders import LoadError, detect, load
    from ltm_cli.services.ingest import IngestOptions, discover

    candidates, _ = discover([str(p) for p in paths], IngestOptions())
    texts = []
    for c in candidates:
        data = c.path.read_bytes()
        kind = detect(c.path, data)
        if kind is None:
            continue
        try:
            doc = load(c.path, data, kind)
        except LoadError:
            continue
        chunks = chunk_sections(doc.sections, target=config.chunk_tokens, overlap=config.chunk_overlap, max_tokens=254)
        texts.extend(ch.embed_text for ch in chunks)
    return list(dict.fromkeys(texts))


def storage_alone(memory: Memory, n: int = 20_000, dim: int = 384) -> dict:
    """Write n chunks + n vectors through the same COPY paths ingest uses, no loading or embedding."""
    import hashlib

    import numpy as np
    from sqlalchemy import text

    from ltm_cli.chunking import Chunk
    from ltm_cli.services.ingest import write_chunks
    from ltm_cli.storage import vectors

    db = memory.db
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    chunks = [Chunk(i, f"synthetic chunk {i} " + "lorem ipsum dolor sit amet " * 40, "Bench > Storage",
                    {"page": i // 4 + 1}, 200) for i in range(n)]
    hashes = [hashlib.sha256(c.text.encode()).digest() for c in chunks]
    with db.connect() as conn:
        sid = memory.store.id(conn, create=True)
        space = vectors.ensure_space(conn, "bench", f"random-{time.time_ns()}", dim)
        doc = conn.execute(text("INSERT INTO documents (store_id, source, content_hash, media_type) "
                                "VALUES (:s, :src, :h, 'text/plain') RETURNING id"),
                           {"s": sid, "src": f"bench-{time.time_ns()}", "h": b"x"}).scalar_one()
    start = time.perf_counter()
    with db.connect() as conn:
        vectors.write(conn, space, hashes, matrix)
    vec_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with db.connect() as conn:
        write_chunks(conn, doc, sid, chunks, hashes)
    chunk_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with db.connect() as conn:
        vectors.ensure_index(conn, space, dim)
    index_seconds = time.perf_counter() - start
    total = vec_seconds + chunk_seconds
    return {"rows": n, "vectors_per_s": round(n / vec_seconds), "chunks_per_s": round(n / chunk_seconds),
            "storage_chunks_per_s": round(n / total), "hnsw_build_s": round(index_seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the PDF manual")
    parser.add_argument("--storage-rows", type=int, default=20_000, help="chunks the storage-alone figure writes")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = parser.parse_args()

    from ltm_cli import Memory
    from ltm_cli.embedders.hashing import HashEmbedder
    from ltm_cli.embedders.local import LocalEmbedder
    from ltm_cli.storage.server import EmbeddedServer

    home = Path(tempfile.mkdtemp(prefix="ltm-bench-"))
    os.environ.pop("LTM_DATABASE_URL", None)  # the throwaway server in `home`, whatever the shell points at
    memory = Memory.open("bench-storage", home=str(home))
    config = memory.config

    def store(name: str, embedder) -> Memory:  # the same database, another store and embedder
        return Memory(config.replace(store=name), embedder=embedder, db=memory.db)

    results: dict = {"machine": {"cpus": os.cpu_count()}, "corpora": {}}
    corpora = {"pdf-bashref": CORPORA["pdf-bashref"]} if args.quick else CORPORA
    try:
        results["storage_alone"] = storage_alone(memory, args.storage_rows)
        print(f"storage alone: {results['storage_alone']}")
        local = LocalEmbedder()
        local.embed(["warm up"])
        for name, paths in corpora.items():
            row: dict = {}
            row["pipeline_hash"] = run_ingest(store(f"bench-hash-{name}", HashEmbedder(384)), paths)
            row["end_to_end_local"] = run_ingest(store(f"bench-local-{name}", local), paths)
            texts = corpus_texts(paths, config)
            start = time.perf_counter()
            for i in range(0, len(texts), 256):
                local.embed(texts[i:i + 256])
            raw = time.perf_counter() - start
            row["raw_model"] = {"texts": len(texts), "seconds": round(raw, 2),
                                "texts_per_s": round(len(texts) / raw, 1)}
            e2e = row["end_to_end_local"]["seconds"]
            row["pipeline_overhead_pct"] = round(100 * (e2e - raw) / raw, 1)
            if name == "pdf-bashref":
                row["pages_per_s_pipeline"] = round(214 / row["pipeline_hash"]["seconds"], 1)
                row["pages_per_s_end_to_end"] = round(214 / e2e, 1)
            results["corpora"][name] = row
            print(f"{name}: {json.dumps(row)}")
        results["peak_rss_mb"] = round(peak_rss_mb(), 1)
        print(f"peak RSS: {results['peak_rss_mb']} MB")
    finally:
        memory.close()
        EmbeddedServer(home).stop()
    save(args.out, results)


if __name__ == "__main__":
    main()
