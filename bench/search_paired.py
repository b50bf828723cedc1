"""In-process search latency, this checkout against an earlier commit, measured side by side.

    python bench/search_paired.py --against HEAD~1 [--stores scifact,10000,100000] [--queries 60] [--rounds 3]

The machine this project runs on is shared and noisy, so one-off timings mean little. This starts two worker
processes, one importing this checkout and one a `git worktree` of `--against`, over the same stores, and sends
them the same queries alternately (the order flips every query): each query gives a pair of timings taken moments
apart. Reports per store and mode the median of each side, the median of the per-query ratios (new / old), and
whether both sides returned the same hits. Query embeddings are computed once and excluded (the retrievers,
fusion and the database are timed, not the model).

Stores (kept in bench/.home between runs, built on first use):
- scifact: the first 1,000 SciFact documents ingested with the `local` model (about 2.2k chunks, real vectors);
- N (a number): N synthetic chunks as bench/search_speed.py builds them (SciFact sentences; vectors mixed from
  real MiniLM vectors of SciFact passages).
Writes bench/results/search_paired.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

DATA = ROOT.parent / "shared" / "data" / "scifact"
HOMES = ROOT / "bench" / ".home"
MODES = ("vector", "keyword", "hybrid")


def queries(n: int) -> list[str]:
    return [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open(encoding="utf-8")][:n]


def query_vectors(texts: list[str]) -> Path:
    """The local model's vectors of the queries, cached: both workers answer from the same file."""
    import numpy as np

    path = HOMES / f"paired-queries-{len(texts)}.npz"
    if not path.exists():
        from ltm_cli.embedders.local import LocalEmbedder

        HOMES.mkdir(parents=True, exist_ok=True)
        np.savez(path, q=np.array(texts), v=LocalEmbedder().embed(texts))
    return path


def build_scifact(home: Path) -> str:
    from ltm_cli import Memory

    folder = home / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    for line in list((DATA / "corpus.jsonl").open(encoding="utf-8"))[:1000]:
        doc = json.loads(line)
        (folder / f"{doc['_id']}.md").write_text(f"# {doc.get('title') or doc['_id']}\n\n{doc['text']}\n",
                                                 encoding="utf-8")
    memory = Memory.open("scifact", home=str(home), embedder="local")
    try:
        memory.docs.ingest([str(folder)])
    finally:
        memory.close()
    return "scifact"


def build_synthetic(home: Path, rows: int) -> str:
    """The synthetic store of bench/search_speed.py (its build, run once into this home)."""
    subprocess.run([sys.executable, str(ROOT / "bench" / "search_speed.py"), "--rows", str(rows), "--build-only",
                    "--home", str(home)], check=True)
    return "speed"


def ensure_store(name: str) -> tuple[Path, str]:
    home = HOMES / f"paired-{name}"
    marker = home / "built"
    if marker.exists():
        return home, marker.read_text()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["LTM_HOME"] = str(home)
    store = build_scifact(home) if name == "scifact" else build_synthetic(home, int(name))
    marker.write_text(store)
    return home, store


WORKER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
home, store, vectors = sys.argv[2], sys.argv[3], sys.argv[4]
os.environ["LTM_HOME"] = home
os.environ.pop("LTM_DATABASE_URL", None)
import numpy as np
from ltm_cli import Memory
from ltm_cli.services import embedding
saved = np.load(vectors)
known = dict(zip(saved["q"].tolist(), saved["v"]))
embedding.query_vector = lambda embedder, q: known[q]
memory = Memory.open(store, home=home, embedder="local")
for line in sys.stdin:
    mode, q = json.loads(line)
    start = time.perf_counter()
    hits = memory.search(q, mode=mode, limit=10)
    ms = (time.perf_counter() - start) * 1000
    print(json.dumps([ms, [[h.id, round(h.score, 5)] for h in hits]]), flush=True)
"""


def measure(home: Path, store: str, sources: dict[str, str], texts: list[str], vectors: Path,
            rounds: int) -> dict:
    script = Path(tempfile.mkdtemp(prefix="ltm-paired-")) / "worker.py"
    script.write_text(WORKER)
    workers = {side: subprocess.Popen([sys.executable, str(script), src, str(home), store, str(vectors)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for side, src in sources.items()}

    def ask(side: str, mode: str, q: str) -> list:
        workers[side].stdin.write(json.dumps([mode, q]) + "\n")
        workers[side].stdin.flush()
        return json.loads(workers[side].stdout.readline())

    out = {}
    try:
        for mode in MODES:
            for q in texts[:5]:  # warm both: connections, caches
                for side in workers:
                    ask(side, mode, q)
            times: dict[str, list[float]] = {"old": [], "new": []}
            same = 0
            for r in range(rounds):
                for i, q in enumerate(texts):
                    order = ("old", "new") if (i + r) % 2 else ("new", "old")
                    got = {side: ask(side, mode, q) for side in order}
                    for side in got:
                        times[side].append(got[side][0])
                    same += [h[0] for h in got["old"][1]] == [h[0] for h in got["new"][1]]
            ratios = [b / a for a, b in zip(times["old"], times["new"], strict=True)]
            out[mode] = {"old_p50_ms": round(statistics.median(times["old"]), 2),
                         "new_p50_ms": round(statistics.median(times["new"]), 2),
                         "new_p95_ms": round(sorted(times["new"])[int(0.95 * len(times["new"]))], 2),
                         "paired_ratio": round(statistics.median(ratios), 3),
                         "same_hits": f"{same}/{len(ratios)}"}
            print(f"  {mode:8} old {out[mode]['old_p50_ms']:7.2f} ms   new {out[mode]['new_p50_ms']:7.2f} ms   "
                  f"ratio {out[mode]['paired_ratio']:.3f}   same hits {out[mode]['same_hits']}", flush=True)
    finally:
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the commit to compare with (e.g. HEAD~1, a tag)")
    parser.add_argument("--stores", default="scifact,10000,100000")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_paired.json"))
    args = parser.parse_args()

    old = Path(tempfile.mkdtemp(prefix="ltm-against-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.against], check=True,
                   capture_output=True)
    texts = queries(args.queries)
    vectors = query_vectors(texts)
    results: dict = {"against": args.against, "load_average": os.getloadavg()[0]}
    try:
        for name in args.stores.split(","):
            home, store = ensure_store(name)
            print(f"store {name}:", flush=True)
            results[name] = measure(home, store, {"old": str(old), "new": str(ROOT)}, texts, vectors, args.rounds)
            from ltm_cli.storage.server import EmbeddedServer

            EmbeddedServer(home).stop()
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    results["load_average_after"] = os.getloadavg()[0]
    save(args.out, results)


if __name__ == "__main__":
    main()
