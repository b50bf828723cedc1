"""HNSW build time against maintenance_work_mem: what a graph that no longer fits in memory costs.

    python bench/hnsw_build_memory.py [--rows 200000] [--mem 64MB 256MB auto] [--rounds 1]

pgvector builds the graph in maintenance_work_mem and, once it no longer fits, goes on inserting on disk pages,
which is many times slower (bench/scale.py: 47 min for 1M chunks, a growth exponent of 1.57 from 100k, with the
fixed 256MB ltm used to set). This builds the same index — ltm's expression, m and ef_construction — over the same
rows once per setting, in a temporary embedded server, the settings alternating when --rounds > 1. `auto` is
what `vectors.build_memory` chooses for that many rows. The vectors are mixtures of two real all-MiniLM-L6-v2
vectors of SciFact passages plus noise (the SciFact vectors cached in bench/.home by bench/hnsw_study.py,
embedded on first use), so the graph has real neighbour structure. Figures go to stdout and
bench/results/hnsw_build_memory.json.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)


def vectors(rows: int, seed: int = 7):
    """`rows` mixtures of two real SciFact vectors (bench/hnsw_study.py's cache, embedded on first use) plus
    noise, renormalised. The mix is this script's own (uniform weight, noise 0.02): the figures in the README
    were measured with it."""
    import json

    import numpy as np

    from bench.hnsw_study import DATA, scifact_vectors

    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open()]
    claims = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()]
    base = scifact_vectors(corpus, claims)[0].astype(np.float32)
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(base), rows), rng.integers(0, len(base), rows)
    mix = rng.random((rows, 1), dtype=np.float32)
    out = mix * base[a] + (1 - mix) * base[b] + rng.normal(0, 0.02, (rows, base.shape[1])).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--mem", nargs="+", default=["64MB", "256MB", "auto"],
                        help="settings to compare; 256MB is what ltm set before, auto what it sets now")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hnsw_build_memory.json"))
    args = parser.parse_args()

    from ltm_cli.storage.server import EmbeddedServer
    from ltm_cli.storage.vectors import HNSW_EF_CONSTRUCTION, HNSW_M, build_memory

    home = Path(tempfile.mkdtemp(prefix="ltm-hnsw-mem-"))
    server = EmbeddedServer(home)
    server.ensure_running()
    import psycopg2

    conn = psycopg2.connect(host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
    cur.execute("CREATE TABLE v (id bigserial PRIMARY KEY, embedding halfvec(384))")
    data = vectors(args.rows)
    buffer = io.StringIO("".join("[" + ",".join(f"{x:.5f}" for x in row) + "]\n" for row in data))
    cur.copy_expert("COPY v (embedding) FROM STDIN", buffer)
    cur.execute("VACUUM ANALYZE v")
    auto = f"{build_memory(args.rows, 384) // 2**20}MB"
    result = {"rows": args.rows, "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "auto": auto,
              "cpus": os.cpu_count(), "load_start": os.getloadavg()[0], "seconds": {}}
    print(f"{args.rows:,} rows; auto = {auto}; load {os.getloadavg()[0]:.1f}")
    for _ in range(args.rounds):
        for setting in args.mem:
            mem = auto if setting == "auto" else setting
            cur.execute("DROP INDEX IF EXISTS v_hnsw")
            cur.execute("BEGIN")
            cur.execute(f"SET LOCAL maintenance_work_mem = '{mem}'")
            start = time.perf_counter()
            cur.execute(f"CREATE INDEX v_hnsw ON v USING hnsw (embedding halfvec_cosine_ops) "
                        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")
            seconds = time.perf_counter() - start
            cur.execute("COMMIT")
            cur.execute("SELECT pg_relation_size('v_hnsw')")
            size = cur.fetchone()[0]
            result["seconds"].setdefault(setting, []).append(round(seconds, 1))
            result["index_mb"] = round(size / 2**20)
            print(f"  {setting:>6} ({mem}): {seconds:7.1f} s, index {size / 2**20:.0f} MB, "
                  f"load {os.getloadavg()[0]:.1f}")
    result["median_seconds"] = {k: statistics.median(v) for k, v in result["seconds"].items()}
    result["load_end"] = os.getloadavg()[0]
    conn.close()
    server.stop()
    save(Path(args.out), {f"rows-{args.rows}": result}, merge=True)
    print(result["median_seconds"])


if __name__ == "__main__":
    main()
