"""Per-call latency of `ltm mcp` through the SDK's stdio client, with 10k chunks stored.

    python bench/mcp_latency.py [--rows 10000] [--calls 200] [--embedder local]

A fresh LTM_HOME gets a store of `--rows` chunks (SciFact sentences; vectors are mixtures of real
all-MiniLM-L6-v2 embeddings of SciFact abstracts, so the index sees the real embedding manifold without embedding
every row). Then `ltm mcp` runs as a subprocess, as an LLM host would start it, and the official SDK client times
each tool call end to end: JSON-RPC over stdio, argument validation, the database, and for memory_search the
query embedding (hybrid mode). Targets (issue 10): settings_get p50 <= 5 ms, memory_search p50 <= 40 ms.
Writes bench/results/mcp_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

DATA = ROOT.parent / "shared" / "data" / "scifact"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_store(home: Path, store: str, rows: int, embedder_name: str) -> list[str]:
    """Fill the store; returns the queries (SciFact claims)."""
    import numpy as np

    from ltm_cli import Memory
    from ltm_cli.chunking import Chunk
    from ltm_cli.services.embedding import content_hash
    from ltm_cli.services.ingest import write_chunks
    from ltm_cli.storage import vectors

    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()]
    sentences = [s.strip() + "." for doc in corpus for s in doc["text"].split(". ") if len(s.split()) > 4]
    rng = np.random.default_rng(42)
    with Memory.open(store, home=str(home), embedder=embedder_name) as memory:
        embedder = memory.embedder
        seeds = embedder.embed([f"{d['title']}\n\n{d['text']}" for d in corpus[:300]])
        texts = [" ".join(sentences[j] for j in rng.integers(0, len(sentences), 8)) + f" (passage {i})"
                 for i in range(rows)]
        a, b = rng.integers(0, len(seeds), rows), rng.integers(0, len(seeds), rows)
        w = rng.uniform(0.55, 0.9, (rows, 1)).astype(np.float32)
        mats = w * seeds[a] + (1 - w) * seeds[b] + rng.normal(0, 0.01, (rows, seeds.shape[1])).astype(np.float32)
        mats /= np.linalg.norm(mats, axis=1, keepdims=True)
        hashes = [content_hash(t) for t in texts]
        from sqlalchemy import text

        with memory.db.connect() as conn:
            sid = memory.store.id(conn, create=True)
            space = vectors.ensure_space(conn, embedder.provider, embedder.model, embedder.dim)
            vectors.write(conn, space, hashes, mats)
            for first in range(0, rows, 1000):
                doc = conn.execute(text("INSERT INTO documents (store_id, source, content_hash, media_type, title) "
                                        "VALUES (:s, :src, '\\x00', 'text/plain', :t) RETURNING id"),
                                   {"s": sid, "src": f"/bench/doc{first}.txt", "t": f"doc {first}"}).scalar()
                part = range(first, min(rows, first + 1000))
                write_chunks(conn, doc, sid, [Chunk(i - first, texts[i], None, {"line": 1}, len(texts[i].split()))
                                              for i in part], [hashes[i] for i in part])
            vectors.ensure_index(conn, space, embedder.dim)
        memory.db.analyze("chunks", "documents", "embeddings")
        for i in range(20):
            memory.settings.set(f"group{i % 4}.key{i}", i)
        memory.settings.set("voice.speed", 1.2, note="bench")
    return queries


async def time_calls(env: dict[str, str], queries: list[str], calls: int) -> dict[str, dict[str, float]]:
    import mcp.types as types
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "ltm_cli", "mcp"], env=env, cwd=str(ROOT))
    plans = {
        "settings_get": lambda i: {"key": "voice.speed"},
        "settings_list": lambda i: {"prefix": "group1"},
        "memory_search": lambda i: {"query": queries[i % len(queries)], "limit": 5},
        "memory_search keyword": lambda i: {"query": queries[i % len(queries)], "limit": 5, "mode": "keyword"},
        "memory_recall": lambda i: {"query": queries[i % len(queries)], "budget": 800},
        "log_turn": lambda i: {"conversation": "bench", "role": "user", "content": queries[i % len(queries)]},
    }
    results: dict[str, dict[str, float]] = {}
    async with Client(params, client_info=types.Implementation(name="bench", version="1")) as client:
        for label, plan in plans.items():
            name = label.split()[0]
            for i in range(5):  # warm: first embedding, plans, pool
                await client.call_tool(name, plan(1000 + i))
            times = []
            n = calls if name in ("settings_get", "settings_list") else max(calls // 2, 10)
            for i in range(n):
                start = time.perf_counter()
                result = await client.call_tool(name, plan(i))
                times.append((time.perf_counter() - start) * 1000)
                assert not result.is_error, result.content
            results[label] = {"calls": n, "p50_ms": round(statistics.median(times), 2),
                              "p95_ms": round(percentile(times, 0.95), 2)}
            print(f"{label:24s} p50 {results[label]['p50_ms']:7.2f} ms   p95 {results[label]['p95_ms']:7.2f} ms",
                  flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--embedder", default="local", choices=["local", "hash"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mcp_latency.json"))
    args = parser.parse_args()

    import anyio

    from ltm_cli.storage.server import EmbeddedServer

    home = Path(tempfile.mkdtemp(prefix="ltm-bench-mcp-"))
    store = "bench"
    try:
        start = time.perf_counter()
        queries = build_store(home, store, args.rows, args.embedder)
        print(f"stored {args.rows} chunks in {time.perf_counter() - start:.1f}s", flush=True)
        env = {**os.environ, "LTM_HOME": str(home), "LTM_STORE": store, "LTM_EMBEDDER": args.embedder}
        env.pop("LTM_DATABASE_URL", None)
        results = anyio.run(time_calls, env, queries, args.calls)
        save(args.out, {"rows": args.rows, "embedder": args.embedder, "calls": results,
                        "targets_ms": {"settings_get": 5, "memory_search": 40}})
    finally:
        EmbeddedServer(home).stop()


if __name__ == "__main__":
    main()
