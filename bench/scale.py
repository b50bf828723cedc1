"""Scale: one store grown step by step (default to 1M chunks, hash embedder) through the real ingest path.

    python bench/scale.py [--sizes 10000,100000,1000000] [--queries 100] [--recall-queries 30] [--keep]

Issue #12, "Scale". After each step, with the store at that many chunks, it measures:
- ingest: `Memory.docs.ingest` of generated Markdown files (the path `ltm ingest DIR` takes), chunks/s of the
  step; the index phase (from the ingest's "index" progress event to its return: the HNSW rebuild over *all*
  rows, since a run writing over 1,000 chunks drops the index, plus ANALYZE, timed again alone to subtract it);
- top-up: a further ingest of `--top-up` chunks per size (500 stays under the 1,000-chunk bulk threshold and
  inserts into the HNSW index; 2,000 goes over it and rebuilds the index over the whole store);
- search: `Memory.search` p50/p95 per mode (vector, keyword, hybrid) over SciFact claims, query embedding
  included (the hash embedder: microseconds), the first 10 queries run twice and their cold runs left out;
- HNSW recall@10 of a sample of queries against exact search (index scans off), on the embeddings table alone;
- peak RSS: the client's VmHWM (reset per step through /proc/self/clear_refs) and the server's, sampled every
  `--interval` s as the sum of RSS (which counts shared_buffers once per backend) and of PSS (which does not)
  over the postmaster and its children, parallel index-build workers included;
- data directory size with and without pg_wal, and the sizes of the main relations.

Text: Markdown documents of 4-12 sections, each a heading (a SciFact or Cranfield title) over one paragraph of
60-110 words sampled from SciFact and Cranfield sentences, so each section is one chunk of ~150 tokens.
A throwaway LTM_HOME under /tmp (1M chunks need ~7 GB: 5.3 KB a chunk at 100k, plus up to ~1 GB of WAL); its
server is stopped and the directory deleted at the end unless --keep. Each top-up of more than 1,000 chunks
rebuilds the whole index again: at 1M, `--top-up 500` saves that rebuild. Prints a table and the growth exponents
(log cost ratio / log size ratio) between sizes; writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

if TYPE_CHECKING:
    from ltm_cli import Memory

DATA = ROOT.parent / "shared" / "data"
MODES = ("vector", "keyword", "hybrid")
WARM = 10  # queries run twice; their first (cold) timings are left out
FILES_PER_DIR = 1000
BYTES_PER_CHUNK_GUESS = 10_000  # data dir + generated files, to warn before a run fills the disk


# -- text --------------------------------------------------------------------------------------------------
def load_text() -> tuple[list[str], list[str]]:
    """Sentences (5-60 words) and short titles from SciFact and Cranfield."""
    sentences, titles = [], []
    for name in ("scifact", "cranfield"):
        for line in (DATA / name / "corpus.jsonl").open():
            doc = json.loads(line)
            title = " ".join(doc.get("title", "").rstrip(" .").split()[:10])
            if title:
                titles.append(title[0].upper() + title[1:])
            for s in doc["text"].replace(" .", ".").split(". "):
                words = s.split()
                if 5 <= len(words) <= 60:
                    sentences.append(" ".join(words).rstrip(".") + ".")
    return sentences, titles


def paragraph(rng: random.Random, sentences: list[str]) -> str:
    words: list[str] = []
    while len(words) < 60:
        s = rng.choice(sentences).split()
        if len(words) + len(s) <= 110:
            words.extend(s)
    return " ".join(words)


def write_documents(root: Path, chunks: int, rng: random.Random, sentences: list[str], titles: list[str],
                    tag: str) -> int:
    """Markdown files holding about `chunks` one-paragraph sections; returns the number of files."""
    written = files = 0
    while written < chunks:
        sections = min(rng.randint(4, 12), chunks - written)
        lines = [f"# {rng.choice(titles)} ({tag} {files})", ""]
        for n in range(sections):
            lines += [f"## {rng.choice(titles)} {n + 1}", "", paragraph(rng, sentences), ""]
        folder = root / f"d{files // FILES_PER_DIR:04d}"
        if files % FILES_PER_DIR == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{files:06d}.md").write_text("\n".join(lines))
        written += sections
        files += 1
    return files


# -- memory and disk ---------------------------------------------------------------------------------------
def _status_kb(pid: int | str, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def server_pids(postmaster: int) -> list[int]:
    """The postmaster and its children (backends, background and parallel workers)."""
    pids = [postmaster]
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


def server_cpu_seconds(postmaster: int) -> float:
    """CPU time of the server: its live processes, plus the children the postmaster has reaped (cutime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in server_pids(postmaster):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == postmaster:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / ticks


class Sampler(threading.Thread):
    """Peak server RSS/PSS sums and client RSS, sampled in the background; `reset()` starts a new window."""

    def __init__(self, postmaster: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.postmaster, self.interval = postmaster, interval
        self.stopped = threading.Event()
        self.reset()

    def reset(self) -> None:
        self.peak = {"server_rss_sum_mb": 0.0, "server_pss_sum_mb": 0.0, "server_processes": 0}
        with contextlib.suppress(OSError):  # "5" resets this process's VmHWM (Linux 4.0+): a peak per step
            Path("/proc/self/clear_refs").write_text("5")

    def sample(self) -> None:
        pids = server_pids(self.postmaster)
        rss = sum(_status_kb(p, "VmRSS") for p in pids) / 1024
        pss = sum(_pss_kb(p) for p in pids) / 1024
        peak = self.peak
        peak["server_rss_sum_mb"] = round(max(peak["server_rss_sum_mb"], rss), 1)
        peak["server_pss_sum_mb"] = round(max(peak["server_pss_sum_mb"], pss), 1)
        peak["server_processes"] = max(peak["server_processes"], len(pids))

    def window(self) -> dict:
        self.sample()
        pids = server_pids(self.postmaster)
        return {**self.peak, "client_hwm_mb": round(_status_kb("self", "VmHWM") / 1024, 1),
                "server_live_hwm_sum_mb": round(sum(_status_kb(p, "VmHWM") for p in pids) / 1024, 1),
                "server_live_hwm_max_mb": round(max(_status_kb(p, "VmHWM") for p in pids) / 1024, 1)}

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()


def disk_bytes(path: Path) -> int:
    """Allocated bytes under path, like du."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a WAL segment recycled under us
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def relation_sizes(memory: Memory, space: int) -> dict:
    from sqlalchemy import text

    mb = 1 << 20
    with memory.db.connect() as conn:
        row = conn.execute(text(f"""
            SELECT pg_database_size(current_database()) AS database,
                   pg_table_size('chunks') AS chunks_table, pg_indexes_size('chunks') AS chunks_indexes,
                   pg_relation_size('ix_chunks_tsv') AS chunks_gin,
                   pg_table_size('embeddings') AS embeddings_table,
                   pg_indexes_size('embeddings') AS embeddings_indexes,
                   coalesce(pg_relation_size(to_regclass('embeddings_hnsw_space_{int(space)}')), 0) AS hnsw,
                   current_setting('maintenance_work_mem') AS mwm,  -- the session's; index builds set their own
                   current_setting('shared_buffers') AS sb""")).mappings().one()
    sizes = {f"{k}_mb": round(v / mb, 1) for k, v in row.items() if isinstance(v, int)}
    sizes["session_maintenance_work_mem"], sizes["shared_buffers"] = row["mwm"], row["sb"]
    return sizes


# -- measurements ------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ingest(memory: Memory, folder: Path, label: str, postmaster: int) -> dict:
    """The real path, timed in two phases split at its "index" progress event, with the CPU each side used:
    wall time well above client + server CPU means waiting (commits, locks, another job on the machine)."""
    marks: dict[str, float] = {}
    seen = [0, time.perf_counter()]

    def progress(event: str, info: dict) -> None:
        if event == "index":
            marks["index"] = time.perf_counter()
        elif event == "file":
            seen[0] += 1
            if time.perf_counter() - seen[1] > 30:
                seen[1] = time.perf_counter()
                print(f"  {label}: {seen[0]} files ingested", file=sys.stderr, flush=True)

    cpu = time.process_time(), server_cpu_seconds(postmaster)
    start = time.perf_counter()
    summary = memory.docs.ingest([str(folder)], progress=progress)
    end = time.perf_counter()
    cpu = time.process_time() - cpu[0], server_cpu_seconds(postmaster) - cpu[1]
    if summary.failed:
        raise SystemExit(f"{len(summary.failed)} files failed, e.g. {summary.failed[0].error}")
    write_s = marks.get("index", end) - start
    start_analyze = time.perf_counter()
    memory.db.analyze("chunks", "documents", "embeddings")
    analyze_s = time.perf_counter() - start_analyze
    index_phase = end - marks.get("index", end)
    return {"files": len(summary.files), "chunks": summary.chunks, "seconds": round(end - start, 2),
            "write_seconds": round(write_s, 2), "chunks_per_s": round(summary.chunks / write_s),
            "index_phase_seconds": round(index_phase, 2), "analyze_seconds": round(analyze_s, 2),
            "hnsw_build_seconds": round(max(0.0, index_phase - analyze_s), 2),
            "client_cpu_seconds": round(cpu[0], 1), "server_cpu_seconds": round(cpu[1], 1)}


def latencies(memory: Memory, queries: list[str]) -> dict:
    out = {}
    for mode in MODES:
        times, empty = [], 0
        for q in queries[:WARM] + queries:
            t0 = time.perf_counter()
            hits = memory.search(q, mode=mode, limit=10)
            times.append((time.perf_counter() - t0) * 1000)
            empty += not hits
        times = times[WARM:]
        out[mode] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(percentile(times, .95), 1),
                     "max_ms": round(max(times), 1), "empty": empty}
    return out


def recall(memory: Memory, space: int, dim: int, queries: list[str], efs: list[int]) -> dict:
    """HNSW top-10 against exact top-10 on the space's vectors (the partial index's own predicate).

    `recall@10` counts the exact top-10 rows found; hash vectors of long texts tie often, so
    `within_exact_10th` also counts a row as found when its distance is no worse than the exact 10th's."""
    from sqlalchemy import text

    vectors = memory.embedder.embed(queries)
    distance = f"embedding::halfvec({dim}) <=> CAST(:q AS halfvec({dim}))"
    sql = text(f"SELECT content_hash, {distance} AS d FROM embeddings WHERE space_id = {int(space)} "
               f"ORDER BY {distance} LIMIT 10")
    out: dict[str, Any] = {"queries": len(queries)}
    exact, worst, exact_ms = [], [], []
    literals = ["[" + ",".join(f"{x:.6g}" for x in v.tolist()) + "]" for v in vectors]
    for literal in literals:
        with memory.db.connect() as conn:
            conn.execute(text("SET LOCAL enable_indexscan = off"))
            conn.execute(text("SET LOCAL enable_bitmapscan = off"))
            t0 = time.perf_counter()
            rows = conn.execute(sql, {"q": literal}).all()
            exact_ms.append((time.perf_counter() - t0) * 1000)
        exact.append({bytes(r[0]) for r in rows})
        worst.append(max(r[1] for r in rows))
    out["exact_p50_ms"] = round(statistics.median(exact_ms), 1)
    with memory.db.connect() as conn:
        plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql.text}"), {"q": literals[0]}))
    out["index_used"] = "embeddings_hnsw_space" in plan
    for ef in efs:
        found, close, times = [], [], []
        for literal, truth, bound in zip(literals, exact, worst, strict=True):
            with memory.db.connect() as conn:
                conn.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef)}"))
                t0 = time.perf_counter()
                rows = conn.execute(sql, {"q": literal}).all()
                times.append((time.perf_counter() - t0) * 1000)
            found.append(len({bytes(r[0]) for r in rows} & truth) / max(1, len(truth)))
            close.append(sum(r[1] <= bound + 1e-9 for r in rows) / max(1, len(truth)))
        out[f"ef{ef}"] = {"recall@10": round(sum(found) / len(found), 3),
                          "within_exact_10th": round(sum(close) / len(close), 3),
                          "p50_ms": round(statistics.median(times), 2)}
    return out


def exponent(a: float, b: float, n_a: int, n_b: int) -> float | None:
    """Growth exponent between two sizes: 1 is linear, 0 constant."""
    if a <= 0 or b <= 0 or n_a == n_b:
        return None
    return round(math.log(b / a) / math.log(n_b / n_a), 2)


def growth(steps: list[dict]) -> list[dict]:
    """For each pair of consecutive sizes, how each cost grew against the number of chunks."""
    metrics = {
        "ingest_s_per_chunk": lambda s: s["ingest"]["write_seconds"] / s["ingest"]["chunks"],
        "hnsw_build_s": lambda s: s["ingest"]["hnsw_build_seconds"],
        "data_dir_no_wal": lambda s: s["disk"]["data_dir_without_wal_mb"],
        "hnsw_index_size": lambda s: s["relations"]["hnsw_mb"],
        "gin_index_size": lambda s: s["relations"]["chunks_gin_mb"],
        "server_pss_peak": lambda s: s["memory"]["server_pss_sum_mb"],
        **{f"{m}_p50": (lambda s, m=m: s["search"][m]["p50_ms"]) for m in MODES},
        "exact_vector_p50": lambda s: s["recall"]["exact_p50_ms"],
        **{f"top_up_{n}_s": (lambda s, n=n: s["top_up"][str(n)]["seconds"]) for n in steps[0].get("top_up", {})},
    }
    out = []
    for a, b in zip(steps, steps[1:], strict=False):
        row: dict[str, Any] = {"from": a["chunks"], "to": b["chunks"]}
        for name, get in metrics.items():
            try:
                row[name] = exponent(get(a), get(b), a["chunks"], b["chunks"])
            except (KeyError, ZeroDivisionError):
                row[name] = None
        out.append(row)
    return out


def print_table(steps: list[dict]) -> None:
    head = (f"{'chunks':>9} {'ingest/s':>8} {'hnsw s':>7} {'vec p50/p95':>12} {'kw p50/p95':>12} "
            f"{'hyb p50/p95':>12} {'recall':>6} {'client':>7} {'srv PSS':>7} {'srv RSS':>7} {'data':>8} {'-wal':>8} "
            f"{'load':>5}")
    print(head)
    for s in steps:
        se, m, d = s["search"], s["memory"], s["disk"]
        lat = [f"{se[k]['p50_ms']:.1f}/{se[k]['p95_ms']:.1f}" for k in MODES]
        ef = max((k for k in s["recall"] if k.startswith("ef")), key=lambda k: int(k[2:]))
        print(f"{s['chunks']:>9} {s['ingest']['chunks_per_s']:>8} {s['ingest']['hnsw_build_seconds']:>7.1f} "
              f"{lat[0]:>12} {lat[1]:>12} {lat[2]:>12} {s['recall'][ef]['recall@10']:>6.3f} "
              f"{m['client_hwm_mb']:>7.0f} {m['server_pss_sum_mb']:>7.0f} {m['server_rss_sum_mb']:>7.0f} "
              f"{d['data_dir_mb']:>8.0f} {d['data_dir_without_wal_mb']:>8.0f} {s['load_average_1min']:>5.1f}")
    print("(ingest/s: chunks/s of the step's write phase; hnsw s: full rebuild at that size; latencies ms; "
          f"recall@10 at {ef}; memory and sizes MB, peaks within the step; load: 1-min load average at search time)")


# -- main --------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="store sizes in chunks, ascending")
    parser.add_argument("--queries", type=int, default=100, help="SciFact claims timed per mode")
    parser.add_argument("--recall-queries", type=int, default=30, help="queries for HNSW recall (exact scans)")
    parser.add_argument("--ef", default="40,100", help="hnsw.ef_search values for recall (search uses 100)")
    parser.add_argument("--top-up", default="500,2000",
                        help="chunks ingested into the store at each size, after its figures (empty: none)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    parser.add_argument("--keep", action="store_true", help="keep the temporary LTM_HOME (server stopped)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    top_ups = [int(s) for s in args.top_up.split(",") if s.strip()]
    efs = [int(s) for s in args.ef.split(",")]
    gaps = [b - a for a, b in zip([0, *sizes], sizes, strict=False)]
    if min(gaps) <= sum(top_ups):
        parser.error("--sizes must be ascending, each step larger than the top-ups together")

    home = Path(tempfile.mkdtemp(prefix="ltm-scale-"))
    free = shutil.disk_usage(home).free
    need = sizes[-1] * BYTES_PER_CHUNK_GUESS
    print(f"LTM_HOME {home}; {free / 1e9:.0f} GB free, roughly {need / 1e9:.0f} GB needed", flush=True)
    if free < need:
        print("warning: the disk may fill before the last size", file=sys.stderr)
    os.environ.pop("LTM_DATABASE_URL", None)  # the throwaway server in `home`, whatever the shell points at
    from sqlalchemy import text

    from ltm_cli import Memory
    from ltm_cli.storage.server import EmbeddedServer

    sentences, titles = load_text()
    queries = [json.loads(line)["text"] for line in (DATA / "scifact" / "queries.jsonl").open()][:args.queries]
    rng = random.Random(12)
    memory = Memory.open("scale", home=str(home), embedder="hash")
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "sizes": sizes, "embedder": "hash/384",
                               "queries": len(queries), "steps": []}
    sampler: Sampler | None = None
    try:
        memory.settings.list()  # starts the embedded server and creates the schema
        sampler = Sampler(EmbeddedServer(home).info().pid, args.interval)
        sampler.start()
        files_dir = home / "files"
        stored = 0
        for size in sizes:
            sampler.reset()
            step: dict[str, Any] = {"chunks": size}
            t0 = time.perf_counter()
            folder = files_dir / f"to-{size}"
            write_documents(folder, size - stored, rng, sentences, titles, f"to-{size}")
            step["generate_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"[{size}] wrote {size - stored} chunks of Markdown in {step['generate_seconds']}s", flush=True)
            step["ingest"] = ingest(memory, folder, f"to {size}", sampler.postmaster)
            shutil.rmtree(folder)
            stored += step["ingest"]["chunks"]
            step["chunks"] = stored
            print(f"[{size}] ingest: {step['ingest']}", flush=True)
            with memory.db.connect() as conn:
                space, dim = conn.execute(text("SELECT id, dim FROM embedding_spaces WHERE provider = 'hash'")).one()
            step["memory"] = sampler.window()  # ingest and index build: the heavy part
            print(f"[{size}] memory, ingest and index build: {step['memory']}", flush=True)
            sampler.reset()
            step["load_average_1min"] = os.getloadavg()[0]  # other jobs on the machine skew the latencies
            step["search"] = latencies(memory, queries)
            print(f"[{size}] search: {step['search']}", flush=True)
            step["recall"] = recall(memory, space, dim, queries[:args.recall_queries], efs)
            print(f"[{size}] recall: {step['recall']}", flush=True)
            with memory.db.connect() as conn:
                conn.execute(text("CHECKPOINT"))  # the WAL figure then shows what the server keeps, not a backlog
            pgdata = home / "pgdata"
            total, wal = disk_bytes(pgdata), disk_bytes(pgdata / "pg_wal")
            step["disk"] = {"data_dir_mb": round(total / 2**20, 1), "pg_wal_mb": round(wal / 2**20, 1),
                            "data_dir_without_wal_mb": round((total - wal) / 2**20, 1),
                            "bytes_per_chunk_without_wal": round((total - wal) / stored)}
            step["relations"] = relation_sizes(memory, space)
            print(f"[{size}] disk: {step['disk']}\n[{size}] relations: {step['relations']}", flush=True)
            step["memory_search"] = sampler.window()  # peaks over search, recall and the size queries
            print(f"[{size}] memory, search: {step['memory_search']}", flush=True)
            if top_ups:
                step["top_up"] = {}
            for n in top_ups:
                folder = files_dir / f"top-{size}-{n}"
                write_documents(folder, n, rng, sentences, titles, f"top-{size}-{n}")
                step["top_up"][str(n)] = ingest(memory, folder, f"top-up {n}", sampler.postmaster)
                shutil.rmtree(folder)
                stored += step["top_up"][str(n)]["chunks"]
                print(f"[{size}] top-up {n}: {step['top_up'][str(n)]}", flush=True)
            results["steps"].append(step)
            save(args.out, results)  # after each size: a long run that dies keeps what it measured
        results["client_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        results["growth"] = growth(results["steps"])
    finally:
        if sampler is not None:
            sampler.stopped.set()
        memory.close()
        EmbeddedServer(home).stop()
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    print()
    print_table(results["steps"])
    if results["growth"]:
        print("\ngrowth exponents between sizes (1 = linear in chunks, 0 = flat; ingest_s_per_chunk > 0 and "
              "totals > 1 grow faster than linearly):")
        for row in results["growth"]:
            print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    slow = [f"{m} at {s['chunks']}" for s in results["steps"] for m in MODES if s["search"][m]["p50_ms"] >= 50]
    print("search p50 under 50 ms at every size" if not slow else f"search p50 at or over 50 ms: {', '.join(slow)}")
    save(args.out, results)


if __name__ == "__main__":
    main()
