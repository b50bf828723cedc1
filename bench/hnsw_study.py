"""HNSW recall/latency study (#12): build parameters, ef_search, halfvec vs vector, and the store filter.

    python bench/hnsw_study.py [--quick] [--rows 100000] [--queries 100] [--reps 3]

Two data sets in one temporary embedded server (LTM_HOME under /tmp, stopped at the end):
- synthetic: the 100k store of bench/search_speed.py (chunks of SciFact sentences; vectors are mixtures of two real
  all-MiniLM-L6-v2 vectors of SciFact passages plus noise, the same generator and seed), queried with the first
  `--queries` SciFact claims;
- real: the 5,183 SciFact corpus texts with their real vectors (cached in bench/.home as .npy), queried with all
  SciFact claims.

Every index build gets its own copy of the vectors in its own embedding space (the rows of one space, with that
space's partial HNSW index, are exactly what ltm builds), so all builds stay queryable and the latency runs can
rotate over them round by round instead of measuring one build while the machine is quiet and the next while it
is busy. The query is the SQL search sends (`vector_sql` with the store filter, in a transaction with
`SET LOCAL hnsw.iterative_scan = relaxed_order` and `hnsw.ef_search`), timed alone; the full vector leg
(`_vector_part`, the JSON array search reads, k = 100) is timed too. Recall is against the same SQL run as an exact
scan (index scans off). The store filter: a copy of the synthetic space plus ~10% more rows belonging to a second
store, searched from each store. Writes bench/results/hnsw_study.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

DATA = ROOT.parent / "shared" / "data" / "scifact"
CACHE = ROOT / "bench" / ".home"
DIM = 384
MWM = "256MB"  # what storage.vectors.ensure_index sets


class Fixed:
    """An embedder answering from precomputed vectors (Memory.open wants one; nothing is embedded here)."""

    def __init__(self, provider: str, model: str, dim: int) -> None:
        self.provider, self.model, self.dim = provider, model, dim
        self.max_tokens, self.batch_size = 254, 64

    def embed(self, texts):  # pragma: no cover - never called
        raise RuntimeError("the study does not embed at search time")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def scifact_vectors(corpus: list[dict], queries: list[str]):
    """The real all-MiniLM-L6-v2 (int8 ONNX) vectors of the SciFact corpus and claims, cached as .npy."""
    import numpy as np

    corpus_file, query_file = CACHE / "scifact-corpus-minilm.npy", CACHE / "scifact-queries-minilm.npy"
    if corpus_file.exists() and query_file.exists():
        docs, qs = np.load(corpus_file), np.load(query_file)
        if len(docs) == len(corpus) and len(qs) == len(queries):
            return docs, qs
    from ltm_cli.embedders.local import LocalEmbedder

    local = LocalEmbedder()
    start = time.perf_counter()
    docs = local.embed([f"{d['title']}\n\n{d['text']}" for d in corpus]).astype(np.float32)
    qs = local.embed(queries).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(corpus_file, docs)
    np.save(query_file, qs)
    print(f"embedded {len(docs)} SciFact texts and {len(qs)} claims in {time.perf_counter() - start:.0f}s",
          flush=True)
    return docs, qs


def synthetic(rng, sentences: list[str], seeds, rows: int, tag: str = ""):
    """bench/search_speed.py's generator: texts of 8 sentences, vectors w*a + (1-w)*b + noise, renormalised."""
    import numpy as np

    picks = rng.integers(0, len(sentences), (rows, 8))
    texts = [" ".join(sentences[j] for j in picks[i]) + f" (passage {tag}{i})" for i in range(rows)]
    a, b = rng.integers(0, len(seeds), rows), rng.integers(0, len(seeds), rows)
    w = rng.uniform(0.55, 0.9, (rows, 1)).astype(np.float32)
    mats = w * seeds[a] + (1 - w) * seeds[b] + rng.normal(0, 0.01, (rows, seeds.shape[1])).astype(np.float32)
    mats /= np.linalg.norm(mats, axis=1, keepdims=True)
    return texts, mats


def main() -> None:  # noqa: C901, PLR0915 (one linear script)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k rows, 20 queries, 2 builds, 1 round")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None, help="latency rounds over all builds (default 3)")
    parser.add_argument("--real-only", action="store_true",
                        help="only the real SciFact store (merged into the results file)")
    parser.add_argument("--out", default=None, help="default bench/results/hnsw_study.json (--quick: _quick)")
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.quick else 100_000)
    n_queries = args.queries or (20 if args.quick else 100)
    reps = args.reps or (1 if args.quick else 3)
    grid = [(16, 64), (16, 200)] if args.quick else [(16, 64), (16, 128), (16, 200), (24, 128), (32, 128)]
    efs = (40, 100, 200) if args.quick else (40, 64, 100, 200, 400)
    out = args.out or str(ROOT / "bench" / "results" / f"hnsw_study{'_quick' if args.quick else ''}.json")

    import numpy as np
    from sqlalchemy import text

    home = Path(tempfile.mkdtemp(prefix="ltm-hnsw-", dir="/tmp"))
    os.environ["LTM_HOME"] = str(home)
    os.environ.pop("LTM_DATABASE_URL", None)
    from ltm_cli import Memory
    from ltm_cli.chunking import Chunk
    from ltm_cli.services import search as search_module
    from ltm_cli.services.filters import CORPORA, Filters
    from ltm_cli.services.ingest import write_chunks
    from ltm_cli.services.search import vector_sql
    from ltm_cli.storage import vectors
    from ltm_cli.storage.server import EmbeddedServer
    from ltm_cli.storage.stores import StoreRef

    vector_part = getattr(search_module, "_vector_part", None)
    corpus_def = CORPORA["docs"]
    results: dict = {"rows": rows, "queries_synthetic": n_queries, "reps": reps, "grid": grid, "ef_search": efs,
                     "maintenance_work_mem": MWM, "load_start": load(), "cpus": os.cpu_count()}
    print(f"load average at start: {results['load_start']} on {os.cpu_count()} cores", flush=True)

    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open()]
    claims = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()]
    real_docs, real_qvecs = scifact_vectors(corpus, claims)
    seeds = real_docs[:2000]  # search_speed.py's seeds: the first 2,000 passages
    syn_qvecs = real_qvecs[:n_queries]
    sentences = [s.strip() + "." for doc in corpus for s in doc["text"].split(". ") if len(s.split()) > 4]

    memory = Memory.open("hnsw-a", home=str(home), embedder=Fixed("local", "all-MiniLM-L6-v2-int8", DIM))
    db = memory.db
    try:
        with db.connect() as conn:
            results["server"] = {name: conn.execute(text(f"SHOW {name}")).scalar() for name in (
                "server_version", "shared_buffers", "max_parallel_maintenance_workers", "max_worker_processes")}
            results["server"]["pgvector"] = conn.execute(
                text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        print(f"server: {results['server']}", flush=True)

        # -- data ------------------------------------------------------------------------------------------
        def add_store(conn, sid: int, texts: list[str], hashes: list[bytes], per_doc: int = 10_000) -> None:
            for start_row in range(0, len(texts), per_doc):
                doc = conn.execute(text("INSERT INTO documents (store_id, source, content_hash, media_type) "
                                        "VALUES (:s, :src, '\\x00', 'text/plain') RETURNING id"),
                                   {"s": sid, "src": f"doc{start_row}"}).scalar()
                part = range(start_row, min(len(texts), start_row + per_doc))
                write_chunks(conn, doc, sid, [Chunk(i - start_row, texts[i], None, {}, len(texts[i].split()))
                                              for i in part], [hashes[i] for i in part])

        def new_space(conn, name: str) -> int:
            return vectors.ensure_space(conn, f"study-{name}", "all-MiniLM-L6-v2-int8", DIM)

        def copy_space(conn, source: int, target: int) -> None:
            conn.execute(text("INSERT INTO embeddings (space_id, content_hash, embedding) "
                              "SELECT :t, content_hash, embedding FROM embeddings WHERE space_id = :s"),
                         {"t": target, "s": source})

        start = time.perf_counter()
        rng = np.random.default_rng(42)  # the same stream as search_speed.py: the same 100k store
        syn_rows = 0 if args.real_only else rows
        syn_texts, syn_mats = synthetic(rng, sentences, seeds, syn_rows)
        syn_hashes = [hashlib.sha256(t.encode()).digest() for t in syn_texts]
        extra = syn_rows // 9  # the second store: 10% of the filtered space's rows
        b_texts, b_mats = synthetic(np.random.default_rng(7), sentences, seeds, extra, tag="b")
        b_hashes = [hashlib.sha256(t.encode()).digest() for t in b_texts]
        real_texts = [f"{d['title']}\n\n{d['text']}" for d in corpus]
        real_hashes = [hashlib.sha256(t.encode()).digest() for t in real_texts]

        spaces: dict[str, int] = {}
        with db.connect() as conn:
            sid_a = memory.store.id(conn, create=True)
            sid_b = StoreRef("hnsw-b").id(conn, create=True)
            sid_real = StoreRef("scifact-real").id(conn, create=True)
            base = new_space(conn, "syn-base")
            vectors.write(conn, base, syn_hashes, syn_mats)
            add_store(conn, sid_a, syn_texts, syn_hashes)
            add_store(conn, sid_b, b_texts, b_hashes)
            add_store(conn, sid_real, real_texts, real_hashes, per_doc=1000)
            for m, efc in grid if syn_rows else ():
                spaces[f"syn m{m} efc{efc}"] = space = new_space(conn, f"syn-{m}-{efc}")
                copy_space(conn, base, space)
            for label in ("syn m16 efc64 vector", "syn m16 efc64 mwm1GB") if syn_rows else ():
                spaces[label] = space = new_space(conn, label.replace(" ", "-"))
                copy_space(conn, base, space)
            for label in ("filter m16 efc64", "filter best") if syn_rows else ():
                spaces[label] = space = new_space(conn, label.replace(" ", "-"))
                copy_space(conn, base, space)
                vectors.write(conn, space, b_hashes, b_mats)
            real_base = new_space(conn, "real-base")
            vectors.write(conn, real_base, real_hashes, real_docs)
            for m, efc in grid:
                spaces[f"real m{m} efc{efc}"] = space = new_space(conn, f"real-{m}-{efc}")
                copy_space(conn, real_base, space)
        db.analyze("chunks", "documents", "embeddings")
        results["load_seconds"] = round(time.perf_counter() - start, 1)
        print(f"loaded in {results['load_seconds']}s", flush=True)

        # -- builds ----------------------------------------------------------------------------------------
        builds: dict[str, dict] = {}

        def build(label: str, m: int, efc: int, kind: str = "halfvec", mwm: str = MWM) -> None:
            space = spaces[label]
            name = f"study_hnsw_{space}"
            ops = "halfvec_cosine_ops" if kind == "halfvec" else "vector_cosine_ops"
            with db.connect() as conn:
                raw = conn.connection.dbapi_connection
                del raw.notices[:]
                conn.execute(text(f"SET LOCAL maintenance_work_mem = '{mwm}'"))
                t0 = time.perf_counter()
                conn.execute(text(f"CREATE INDEX {name} ON embeddings USING hnsw ((embedding::{kind}({DIM})) {ops}) "
                                  f"WITH (m = {m}, ef_construction = {efc}) WHERE space_id = {space}"))
                seconds = time.perf_counter() - t0
                size = conn.execute(text("SELECT pg_relation_size(CAST(:n AS regclass))"), {"n": name}).scalar()
                notices = [n.strip() for n in raw.notices]
            builds[label] = {"space": space, "kind": kind, "m": m, "ef_construction": efc,
                             "maintenance_work_mem": mwm, "build_seconds": round(seconds, 1),
                             "index_mb": round(size / 2**20, 1), "notices": notices, "load": load()}
            print(f"built {label}: {builds[label]}", flush=True)

        if syn_rows:
            for m, efc in grid:
                build(f"syn m{m} efc{efc}", m, efc)
            build("syn m16 efc64 vector", 16, 64, kind="vector")
            build("syn m16 efc64 mwm1GB", 16, 64, mwm="1GB")
        for m, efc in grid:
            build(f"real m{m} efc{efc}", m, efc)
        results["builds"] = builds

        # -- the queries -----------------------------------------------------------------------------------
        def sql_for(space: int, kind: str) -> tuple[str, str | None]:
            where = corpus_def.where(Filters(), {}, None, 0)  # docs: only the store clause
            sql = vector_sql(corpus_def, where, space, DIM)
            leg = f"SELECT {vector_part(corpus_def, where, space, DIM)} AS leg" if vector_part else None
            if kind == "vector":
                sql = sql.replace(f"halfvec({DIM})", f"vector({DIM})")
                leg = None  # the leg SQL is halfvec-only
            return sql, leg

        truths: dict[tuple, list[list[int]]] = {}

        def exact(dataset: str, space: int, kind: str, sid: int, qvecs) -> list[list[int]]:
            key = (dataset, kind, sid)
            if key not in truths:
                stmt = text(sql_for(space, kind)[0])
                found = []
                with db.connect() as conn:
                    conn.execute(text("SET LOCAL enable_indexscan = off"))
                    conn.execute(text("SET LOCAL enable_bitmapscan = off"))
                    for qv in qvecs:
                        found.append([r.id for r in conn.execute(stmt, {"store": sid, "k": 100,
                                                                       "qvec": vectors.vector_literal(qv)})])
                truths[key] = found
            return truths[key]

        # a variant: one index searched from one store
        variants = []
        for label, b in builds.items():
            if label.startswith("syn m16 efc64 mwm"):
                continue  # the same graph as "syn m16 efc64" (build time is the point)
            dataset = "real" if label.startswith("real") else "synthetic"
            variants.append({"label": label, "space": b["space"], "kind": b["kind"], "sid": sid_real
                             if dataset == "real" else sid_a, "dataset": dataset,
                             "qvecs": real_qvecs if dataset == "real" else syn_qvecs})

        def run_rounds(chosen: list[dict], samples: dict, recalls: dict) -> None:
            for rep in range(reps):
                results.setdefault("load_rounds", []).append(load())
                order = chosen[rep % len(chosen):] + chosen[:rep % len(chosen)]  # rotate the start
                for v in order:
                    sql, leg_sql = sql_for(v["space"], v["kind"])
                    stmt, leg = text(sql), (text(leg_sql) if leg_sql else None)
                    truth = exact(v["dataset"], v["space"], v["kind"], v["sid"], v["qvecs"])
                    literals = [vectors.vector_literal(qv) for qv in v["qvecs"]]
                    with db.connect() as conn:
                        conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
                        if v.get("force"):
                            conn.execute(text("SET LOCAL enable_sort = off"))
                        conn.execute(text("SET LOCAL hnsw.ef_search = 100"))
                        for lit in literals[:10]:  # warm the index's pages
                            conn.execute(stmt, {"store": v["sid"], "k": 100, "qvec": lit}).all()
                        for qi, lit in enumerate(literals):
                            for ef in efs:
                                conn.execute(text(f"SET LOCAL hnsw.ef_search = {ef}"))
                                for k in (10, 100):
                                    t0 = time.perf_counter()
                                    got = conn.execute(stmt, {"store": v["sid"], "k": k, "qvec": lit}).all()
                                    ms = (time.perf_counter() - t0) * 1000
                                    samples.setdefault((v["label"], ef, k), []).append(ms)
                                    if rep == 0:
                                        ids = [r.id for r in sorted(got, key=lambda r: r.distance)]
                                        r = recalls.setdefault((v["label"], ef), {})
                                        if k == 10:
                                            r.setdefault("r10", []).append(len(set(ids) & set(truth[qi][:10])) / 10)
                                        else:
                                            r.setdefault("r10_in_100", []).append(
                                                len(set(ids[:10]) & set(truth[qi][:10])) / 10)
                                            r.setdefault("r100", []).append(
                                                len(set(ids) & set(truth[qi][:100])) / max(1, len(truth[qi])))
                                            r.setdefault("short", []).append(len(ids) < len(truth[qi]))
                                if leg is not None:
                                    t0 = time.perf_counter()
                                    conn.execute(leg, {"store": v["sid"], "k": 100, "qvec": lit}).all()
                                    samples.setdefault((v["label"], ef, "leg"), []).append(
                                        (time.perf_counter() - t0) * 1000)
                print(f"round {rep + 1}/{reps} done, load {load()}", flush=True)

        def summarise(chosen: list[dict], samples: dict, recalls: dict) -> dict:
            out = {}
            for v in chosen:
                rows_out = {}
                for ef in efs:
                    r = recalls[(v["label"], ef)]
                    row = {"recall@10": round(statistics.mean(r["r10"]), 4),
                           "recall@10_of_limit100": round(statistics.mean(r["r10_in_100"]), 4),
                           "recall@100": round(statistics.mean(r["r100"]), 4),
                           "short_of_100_share": round(statistics.mean(r["short"]), 3)}
                    for k in (10, 100, "leg"):
                        times = samples.get((v["label"], ef, k))
                        if times:
                            name = f"k{k}" if k != "leg" else "leg_k100"
                            row[f"{name}_p50_ms"] = round(statistics.median(times), 2)
                            row[f"{name}_p95_ms"] = round(percentile(times, .95), 2)
                    rows_out[str(ef)] = row
                out[v["label"]] = rows_out
            return out

        def explain(v: dict, force: bool = False) -> str:
            with db.connect() as conn:
                conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
                if force:
                    conn.execute(text("SET LOCAL enable_sort = off"))
                plan = "\n".join(r[0] for r in conn.execute(text("EXPLAIN " + sql_for(v["space"], v["kind"])[0]), {
                    "store": v["sid"], "k": 100, "qvec": vectors.vector_literal(v["qvecs"][0])}))
            return re.sub(r"'\[[^\]]*\]'", "'[…]'", plan)

        def check(chosen: list[dict]) -> list[dict]:
            """Does the planner use the variant's HNSW index? When it prefers an exact scan (a small store or space
            in a big table), the index is forced (enable_sort = off) to measure it, and the planner's own plan is
            kept as one more variant: that is what ltm would run."""
            extra = []
            for v in chosen:
                uses = f"study_hnsw_{v['space']}" in explain(v)
                record = results.setdefault("plans", {}).setdefault(v["label"], {"planner_uses_index": uses})
                if not uses:
                    v["force"] = True
                    record["forced_plan"] = explain(v, force=True)
                    record["planner_plan"] = explain(v)
                    print(f"{v['label']}: the planner prefers an exact scan; the index is forced", flush=True)
                    if f"study_hnsw_{v['space']}" not in record["forced_plan"]:
                        print(f"WARNING: {v['label']} cannot be made to use its index", flush=True)
                    if not any(e["dataset"] == v["dataset"] and e["sid"] == v["sid"] for e in extra):
                        extra.append({**v, "label": f"{v['dataset']} planner's own plan (exact)", "force": False})
            return chosen + extra

        variants = check(variants)
        results["plan_example"] = explain(variants[0], force=variants[0].get("force", False))

        samples: dict = {}
        recalls: dict = {}
        run_rounds(variants, samples, recalls)
        results["real_curve"] = summarise([v for v in variants if v["dataset"] == "real"], samples, recalls)
        if not args.real_only:
            results["curve"] = summarise([v for v in variants if v["dataset"] != "real"], samples, recalls)

        if syn_rows:
            # -- the store filter: the best synthetic build, and the default, over a space shared by two stores ------
            def score(label: str) -> float:
                return results["curve"][label]["100"]["recall@10"] if "100" in results["curve"][label] else 0.0

            syn_grid = [f"syn m{m} efc{efc}" for m, efc in grid]
            meeting = [g for g in syn_grid if score(g) >= 0.97]
            best = (min(meeting, key=lambda g: builds[g]["build_seconds"]) if meeting else max(syn_grid, key=score))
            results["filter_best_is"] = best
            build("filter m16 efc64", 16, 64)
            build("filter best", builds[best]["m"], builds[best]["ef_construction"])
            results["builds"] = builds
            filter_variants = []
            for label in ("filter m16 efc64", "filter best"):
                for store_label, sid in (("store A (90%)", sid_a), ("store B (10%)", sid_b)):
                    filter_variants.append({"label": f"{label} / {store_label}", "space": spaces[label],
                                            "kind": "halfvec", "sid": sid, "dataset": "filter", "qvecs": syn_qvecs})
            fsamples: dict = {}
            frecalls: dict = {}
            filter_variants = check(filter_variants)
            run_rounds(filter_variants, fsamples, frecalls)
            results["filter_curve"] = summarise(filter_variants, fsamples, frecalls)
        results["load_end"] = load()

        # -- the table -------------------------------------------------------------------------------------
        print(f"\nload average: start {results['load_start']}, rounds {results['load_rounds']}, "
              f"end {results['load_end']}")
        print(f"\n{'build':28} {'kind':8} {'build s':>8} {'MB':>7}")
        for label, b in builds.items():
            print(f"{label:28} {b['kind']:8} {b['build_seconds']:8} {b['index_mb']:7}"
                  + (f"  ({'; '.join(b['notices'])})" if b["notices"] else ""))
        head = (f"\n{'index / store':44} {'ef':>4} {'R@10':>6} {'R@10/100':>8} {'R@100':>6} {'short':>5} "
                f"{'k10 p50':>8} {'p95':>6} {'k100 p50':>8} {'p95':>6} {'leg p50':>7}")
        for curve in (results.get("curve", {}), results["real_curve"], results.get("filter_curve", {})):
            print(head)
            for label, per_ef in curve.items():
                for ef, r in per_ef.items():
                    print(f"{label:44} {ef:>4} {r['recall@10']:6.3f} {r['recall@10_of_limit100']:8.3f} "
                          f"{r['recall@100']:6.3f} {r['short_of_100_share']:5.2f} "
                          f"{r.get('k10_p50_ms', 0):8.2f} {r.get('k10_p95_ms', 0):6.2f} {r.get('k100_p50_ms', 0):8.2f} "
                          f"{r.get('k100_p95_ms', 0):6.2f} {r.get('leg_k100_p50_ms', 0):7.2f}")
    finally:
        memory.close()
        EmbeddedServer(home).stop()
    if args.real_only:  # beside a full run's figures, not over them
        results = {"real_curve": results.pop("real_curve"), "real_only_run": results}
    save(out, results, merge=args.real_only)


if __name__ == "__main__":
    main()
