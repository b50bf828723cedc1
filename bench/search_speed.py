"""Search speed at 100k chunks: latency per mode, HNSW recall against exact search, CLI start-up.

    python bench/search_speed.py [--rows 100000] [--queries 100]
    python bench/search_speed.py --cli-only [--cli-runs 15]   # the command-line figures alone, on a small store

Corpus: chunks of ~150 words sampled from SciFact sentences; vectors are mixtures of real all-MiniLM-L6-v2
embeddings of SciFact passages (two real vectors plus a little noise, renormalised), so the index sees the real
embedding manifold without embedding 100k texts. Queries are SciFact claims with their real embeddings; query
embedding time is excluded from the in-process figures (it is in the CLI figures). Writes
bench/results/search_speed.json.

The command line is timed as a user meets it: a fresh `python -m ltm_cli` process against a running server,
median wall and CPU time of `--cli-runs` runs after one warm-up each (which writes bytecode, as an install has):
`--version`, `settings get`, keyword search and hybrid search with the local model. With --cli-only the store is
the first 200 SciFact abstracts ingested with the local model (~30 s), not the 100k build, and the figures go to
bench/results/search_speed_cli.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

DATA = ROOT.parent / "shared" / "data" / "scifact"


class Fixed:
    """An embedder that answers from precomputed vectors: the search is timed, not the model."""

    def __init__(self, vectors: dict, provider: str, model: str, dim: int) -> None:
        self.vectors, self.provider, self.model, self.dim = vectors, provider, model, dim
        self.max_tokens, self.batch_size = 254, 64

    def embed(self, texts):
        import numpy as np

        return np.stack([self.vectors[t] for t in texts])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--out", help="default: bench/results/search_speed.json (search_speed_cli.json, --cli-only)")
    parser.add_argument("--home", help="build the store here (default: a new temporary directory)")
    parser.add_argument("--build-only", action="store_true",
                        help="build the store and stop (bench/search_paired.py keeps it between runs)")
    parser.add_argument("--cli-only", action="store_true", help="only the command-line figures, on a small store")
    parser.add_argument("--cli-runs", type=int, default=15, help="fresh processes timed per command")
    args = parser.parse_args()
    if args.cli_only:
        cli_only(args)
        return
    args.out = args.out or str(ROOT / "bench" / "results" / "search_speed.json")

    import numpy as np
    from sqlalchemy import text

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="ltm-speed-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["LTM_HOME"] = str(home)  # for the `ltm` subprocesses timed below
    os.environ.pop("LTM_DATABASE_URL", None)
    from ltm_cli import Memory
    from ltm_cli.chunking import Chunk
    from ltm_cli.embedders.local import LocalEmbedder
    from ltm_cli.services.filters import CORPORA, Filters
    from ltm_cli.services.ingest import write_chunks
    from ltm_cli.services.search import vector_sql
    from ltm_cli.storage import vectors
    from ltm_cli.storage.server import EmbeddedServer

    rng = np.random.default_rng(42)
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open()]
    sentences = [s.strip() + "." for doc in corpus for s in doc["text"].split(". ") if len(s.split()) > 4]
    queries = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()][:args.queries]
    local = LocalEmbedder()
    start = time.perf_counter()
    cache = ROOT / "bench" / ".home" / f"speed-vectors-{len(queries)}.npz"
    if cache.exists():
        saved = np.load(cache)
        seeds, qvecs = saved["seeds"], saved["queries"]
    else:
        seeds = local.embed([f"{d['title']}\n\n{d['text']}" for d in corpus[:2000]])
        qvecs = local.embed(queries)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, seeds=seeds, queries=qvecs)
    results: dict = {"rows": args.rows, "queries": len(queries),
                     "embedding_seconds_setup": round(time.perf_counter() - start, 1)}
    print(f"embedded seeds and queries in {results['embedding_seconds_setup']}s", flush=True)

    store = "speed"
    fixed = Fixed({q: v for q, v in zip(queries, qvecs, strict=True)}, local.provider, local.model, local.dim)
    memory = Memory.open(store, home=str(home), embedder=fixed)
    db = memory.db
    try:
        # -- build the store -------------------------------------------------------------------------
        start = time.perf_counter()
        texts = []
        picks = rng.integers(0, len(sentences), (args.rows, 8))
        for i in range(args.rows):
            texts.append(" ".join(sentences[j] for j in picks[i]) + f" (passage {i})")
        a, b = rng.integers(0, len(seeds), args.rows), rng.integers(0, len(seeds), args.rows)
        w = rng.uniform(0.55, 0.9, (args.rows, 1)).astype(np.float32)
        mats = w * seeds[a] + (1 - w) * seeds[b] + rng.normal(0, 0.01, (args.rows, seeds.shape[1])).astype(np.float32)
        mats /= np.linalg.norm(mats, axis=1, keepdims=True)
        hashes = [hashlib.sha256(t.encode()).digest() for t in texts]
        with db.connect() as conn:
            sid = memory.store.id(conn, create=True)
            space = vectors.ensure_space(conn, local.provider, local.model, local.dim)
            vectors.drop_index(conn, space)
            vectors.write(conn, space, hashes, mats)
            for start_row in range(0, args.rows, 10_000):
                doc = conn.execute(text("INSERT INTO documents (store_id, source, content_hash, media_type) "
                                        "VALUES (:s, :src, '\\x00', 'text/plain') RETURNING id"),
                                   {"s": sid, "src": f"doc{start_row}"}).scalar()
                part = range(start_row, min(args.rows, start_row + 10_000))
                write_chunks(conn, doc, sid, [Chunk(i - start_row, texts[i], None, {}, len(texts[i].split()))
                                              for i in part], [hashes[i] for i in part])
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        with db.connect() as conn:
            vectors.ensure_index(conn, space, local.dim)
        index_s = time.perf_counter() - start
        db.analyze("chunks", "documents", "embeddings")
        results["build"] = {"load_seconds": round(load_s, 1), "hnsw_seconds": round(index_s, 1)}
        print(f"built: {results['build']}", flush=True)
        if args.build_only:
            return

        # -- latency per mode ---------------------------------------------------------------------------
        warm = queries[:10]  # run twice, their first (cold) timings left out
        for mode in ("vector", "keyword", "hybrid"):
            times = []
            for q in queries + warm:
                t0 = time.perf_counter()
                memory.search(q, mode=mode, limit=10)
                times.append((time.perf_counter() - t0) * 1000)
            times = times[len(warm):]
            results[f"{mode}_ms"] = {"p50": round(statistics.median(times), 1), "p95": round(percentile(times, .95), 1)}
            print(f"{mode}: {results[f'{mode}_ms']}", flush=True)
        filtered = []
        for q in queries:
            t0 = time.perf_counter()
            hits = memory.search(q, mode="vector", limit=10, source="doc90000" if args.rows > 90_000 else "doc0")
            filtered.append(((time.perf_counter() - t0) * 1000, len(hits)))
        results["vector_filtered_10pct_ms"] = {"p50": round(statistics.median(t for t, _ in filtered), 1),
                                               "full_limit_share": sum(n == 10 for _, n in filtered) / len(filtered)}
        print(f"vector, 10% filter: {results['vector_filtered_10pct_ms']}", flush=True)

        # -- HNSW recall against exact search ----------------------------------------------------------------
        corpus_def = CORPORA["docs"]
        for ef in (40, 100, 200):
            recalls, times = [], []
            for qv in qvecs:
                literal = vectors.vector_literal(qv)
                with db.connect() as conn:
                    where = corpus_def.where(Filters(), {}, conn, sid)
                    conn.execute(text(f"SET LOCAL hnsw.ef_search = {ef}"))
                    t0 = time.perf_counter()
                    approx = [r.id for r in conn.execute(text(vector_sql(corpus_def, where, space, local.dim)),
                                                         {"store": sid, "qvec": literal, "k": 10})]
                    times.append((time.perf_counter() - t0) * 1000)
                    conn.execute(text("SET LOCAL enable_indexscan = off"))
                    conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                    exact = [r.id for r in conn.execute(text(vector_sql(corpus_def, where, space, local.dim)),
                                                        {"store": sid, "qvec": literal, "k": 10})]
                recalls.append(len(set(approx) & set(exact)) / 10)
            results[f"hnsw_ef{ef}"] = {"recall@10": round(sum(recalls) / len(recalls), 3),
                                       "p50_ms": round(statistics.median(times), 1)}
            print(f"ef_search {ef}: {results[f'hnsw_ef{ef}']}", flush=True)

        # -- HNSW recall on real embeddings: the SciFact store bench/retrieval.py leaves in bench/.home -------
        real_home = ROOT / "bench" / ".home"
        if (real_home / "pgdata").exists():
            real = Memory.open("scifact-local-200-32", home=str(real_home))
            try:
                with real.db.connect() as conn:
                    real_sid = real.store.id(conn, create=False)
                    real_space = vectors.find_space(conn, local.provider, local.model, local.dim)
                if real_sid and real_space:
                    for ef in (40, 100, 200):
                        recalls = []
                        for qv in qvecs:
                            literal = vectors.vector_literal(qv)
                            with real.db.connect() as conn:
                                where = corpus_def.where(Filters(), {}, conn, real_sid)
                                conn.execute(text(f"SET LOCAL hnsw.ef_search = {ef}"))
                                sql = vector_sql(corpus_def, where, real_space, local.dim)
                                bind = {"store": real_sid, "qvec": literal, "k": 10}
                                approx = {r.id for r in conn.execute(text(sql), bind)}
                                conn.execute(text("SET LOCAL enable_indexscan = off"))
                                conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                                exact = {r.id for r in conn.execute(text(sql), bind)}
                            recalls.append(len(approx & exact) / 10)
                        results[f"hnsw_real_scifact_ef{ef}_recall@10"] = round(sum(recalls) / len(recalls), 3)
                        print(f"real SciFact vectors, ef_search {ef}: recall@10 "
                              f"{results[f'hnsw_real_scifact_ef{ef}_recall@10']}", flush=True)
            finally:
                real.close()

        # -- the CLI as a fresh process ---------------------------------------------------------------------
        memory.settings.set("voice.speed", 1.2)
        results.update(cli_figures({**os.environ, "LTM_STORE": store}, queries[0], args.cli_runs))
    finally:
        memory.close()
        EmbeddedServer(home).stop()
    save(args.out, results)


def cli_figures(env: dict[str, str], query: str, runs: int) -> dict:
    """Median wall and CPU seconds of fresh `ltm` processes (the server already running), and what they import."""
    import resource

    # As installed: with bytecode. Without it (PYTHONDONTWRITEBYTECODE) every run compiles ltm's modules again.
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    commands = {"version": ["--version"], "settings_get": ["settings", "get", "voice.speed"],
                "search_keyword": ["search", query, "--mode", "keyword", "--json"],
                "search_hybrid_local": ["search", query, "--json"]}
    figures: dict = {}
    for label, argv in commands.items():
        command = [sys.executable, "-m", "ltm_cli", *argv]
        subprocess.run(command, env=env, capture_output=True, check=True)  # warm-up: page cache, model cache
        walls, cpus = [], []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(command, env=env, capture_output=True, check=True)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        figures[f"cli_{label}_s"] = round(statistics.median(walls), 3)
        figures[f"cli_{label}_cpu_s"] = round(statistics.median(cpus), 3)
        print(f"cli {label}: {figures[f'cli_{label}_s']}s wall, {figures[f'cli_{label}_cpu_s']}s CPU "
              f"(median of {runs})", flush=True)
    imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "ltm_cli", *commands["settings_get"]],
                             capture_output=True, text=True, env=env).stderr.splitlines()
    rows = [line.split("|") for line in imports if line.startswith("import time:") and "imported package" not in line]
    modules = {row[2].strip(): int(row[1]) for row in rows}
    figures["settings_get_import_us"] = sum(int(row[0].split(":")[1]) for row in rows)
    figures["settings_get_imports"] = sorted({m.split(".")[0] for m in modules} & {
        "sqlalchemy", "alembic", "rich", "numpy", "pydantic", "onnxruntime", "tokenizers", "mcp", "typer",
        "psycopg2"})
    print(f"settings get imports {figures['settings_get_import_us']} µs of modules, among them "
          f"{', '.join(figures['settings_get_imports'])}", flush=True)
    return figures


def cli_only(args: argparse.Namespace) -> None:
    """The command-line figures on a store of 200 SciFact abstracts, in a server of its own."""
    home = Path(tempfile.mkdtemp(prefix="ltm-cli-speed-"))
    env = {**os.environ, "LTM_HOME": str(home), "LTM_STORE": "cli-speed"}
    env.pop("LTM_DATABASE_URL", None)
    env.pop("LTM_EMBEDDER", None)
    os.environ.update(LTM_HOME=str(home))
    from ltm_cli import Memory
    from ltm_cli.storage.server import EmbeddedServer

    docs = home / "docs"
    docs.mkdir()
    with (DATA / "corpus.jsonl").open() as corpus:
        for i, line in zip(range(200), corpus, strict=False):
            doc = json.loads(line)
            (docs / f"{i:03d}-{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
    query = json.loads((DATA / "queries.jsonl").open().readline())["text"]
    try:
        start = time.perf_counter()
        with Memory.open("cli-speed", home=str(home), embedder="local") as memory:
            memory.docs.ingest([str(docs)])
            memory.settings.set("voice.speed", 1.2)
        results: dict = {"store": "200 SciFact abstracts, local model",
                         "setup_seconds": round(time.perf_counter() - start, 1)}
        print(f"store built in {results['setup_seconds']}s", flush=True)
        results.update(cli_figures(env, query, args.cli_runs))
    finally:
        EmbeddedServer(home).stop()
    save(args.out or str(ROOT / "bench" / "results" / "search_speed_cli.json"), results)


if __name__ == "__main__":
    main()
