"""Retrieval quality on real benchmarks: nDCG@10 and Recall@100 per mode and embedder.

    python bench/retrieval.py [--dataset cranfield scifact] [--embedder local hash] [--chunk-tokens N]
                              [--queries N]

Each BEIR corpus line becomes one Markdown file (`# title` + text) ingested through the normal service layer into
its own store; each query runs through the same retrievers `ltm search` uses. Chunk hits are collapsed to their
document (best rank). Also compares fusion variants computed from the same two retrievers' rankings.
The embedded server lives in bench/.home (kept between runs: the embedding cache makes re-runs cheap).
Figures go to stdout and bench/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

if TYPE_CHECKING:
    from ltm_cli import Memory

DATA = ROOT.parent / "shared" / "data"
REFERENCE = {  # shared/data/README.md: standard libraries on these query sets
    "cranfield": {"bm25": 0.346, "minilm": 0.357, "rrf": 0.401},
    "scifact": {"bm25": 0.681, "minilm": 0.667, "rrf": 0.698},
}


def load_beir(name: str) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    base = DATA / name
    corpus = [json.loads(line) for line in (base / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (base / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in (base / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")
        if int(score) > 0:
            qrels.setdefault(qid, {})[did] = int(score)
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def write_corpus(name: str, corpus: list[dict], home: Path) -> Path:
    folder = home / "corpora" / name
    folder.mkdir(parents=True, exist_ok=True)
    for doc in corpus:
        path = folder / f"{doc['_id']}.md"
        body = f"# {' '.join(doc.get('title', '').split()) or doc['_id']}\n\n{doc['text']}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != body:
            path.write_text(body, encoding="utf-8")
    return folder


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum((2 ** rels.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int = 100) -> float:
    return len(set(ranked[:k]) & set(rels)) / len(rels)


def collapse(keys: list, source_of: dict[int, str]) -> list[str]:
    """Chunk ranking -> document ranking (first, i.e. best, chunk of each document)."""
    seen: dict[str, None] = {}
    for _, chunk_id in keys:
        seen.setdefault(Path(source_of[chunk_id]).stem, None)
    return list(seen)


def stock_rank(db, store: str, query: str, k: int, function: str, websearch: bool) -> list:
    """PostgreSQL's own ranking, for comparison with ltm's BM25: ts_rank or ts_rank_cd over the OR of the
    query's lexemes, or over websearch_to_tsquery (every word required)."""
    from sqlalchemy import text

    tsq = ("websearch_to_tsquery('english', :q)" if websearch else
           "(SELECT string_agg(quote_literal(l), ' | ')::tsquery FROM unnest(tsvector_to_array("
           "to_tsvector('english', :q))) AS l)")
    with db.connect() as conn:
        rows = conn.execute(text(f"""
            WITH q AS (SELECT {tsq} AS tsq)
            SELECT c.id, {function}(c.tsv, q.tsq) AS score FROM chunks c JOIN stores s ON s.id = c.store_id, q
            WHERE s.name = :store AND c.tsv @@ q.tsq ORDER BY score DESC, c.id LIMIT :k"""),
            {"q": query, "store": store, "k": k}).all()
    return [(("docs", r.id), float(r.score)) for r in rows]


NEIGHBOUR_WEIGHTS = (0.1, 0.2, 0.4)


def neighbour_boosted(hits: list, weight: float) -> list:
    """Hybrid results re-ranked as if each document chunk gained `weight` times the better fused score of the
    chunks just before and after it in its document (fusion.boost_neighbours, which conversation turns use),
    among the results returned."""
    from ltm_cli.services.fusion import boost_neighbours

    fused = [(("docs", h.id), h.score, {}) for h in hits]
    place = {("docs", h.id): (h.document_id, h.ordinal) for h in hits}
    return [key for key, _, _ in boost_neighbours(fused, place, weight)]


def evaluate(memory: Memory, queries: dict[str, str], qrels, k: int) -> dict:
    from bench.legs import leg_results, row_keys
    from ltm_cli.services.fusion import convex, rrf
    from ltm_cli.services.search import search

    store, db = memory.store.name, memory.db
    per_query, product, no_feedback = {}, {}, {}
    stock = {name: {} for name in ("ts_rank", "ts_rank_cd", "ts_rank_websearch")}
    for qid, text in queries.items():
        per_query[qid] = leg_results(memory, text, k=k)
        stock["ts_rank"][qid] = stock_rank(db, store, text, k, "ts_rank", False)
        stock["ts_rank_cd"][qid] = stock_rank(db, store, text, k, "ts_rank_cd", False)
        stock["ts_rank_websearch"][qid] = stock_rank(db, store, text, k, "ts_rank", True)
    start = time.perf_counter()
    product_hits = {}
    for qid, text in queries.items():  # what `ltm search -n 100` returns, defaults and all
        product_hits[qid] = memory.search(text, limit=100)
        product[qid] = [("docs", h.id) for h in product_hits[qid]]
    seconds = time.perf_counter() - start
    top10, diverse10 = {}, {}
    for qid, text in queries.items():
        # feedback is a service option only (not on Memory.search): the ablation calls the service directly
        no_feedback[qid] = [("docs", h.id) for h in search(db, memory.embedder, memory.store, text, limit=100,
                                                          feedback=False)]
        top10[qid] = [("docs", h.id) for h in memory.search(text, limit=10)]
        diverse10[qid] = [("docs", h.id) for h in memory.search(text, limit=10, diverse=True)]
    ids = {key[1] for legs in per_query.values() for leg in legs.values() for key, _ in leg}
    ids |= {key[1] for run in (product, no_feedback, top10, diverse10) for keys in run.values() for key in keys}
    ids |= {key[1] for run in stock.values() for hits in run.values() for key, _ in hits}
    source_of = row_keys(db, "docs", sorted(ids))
    dump = memory.config.home_path / f"legs-{store}.pkl"
    dump.write_bytes(pickle.dumps({"legs": per_query, "source_of": source_of, "qrels": qrels}))

    def score(rank_fn) -> dict:
        nd, rc = [], []
        for qid, legs in per_query.items():
            ranked = collapse(rank_fn(legs), source_of)
            nd.append(ndcg_at(ranked, qrels[qid]))
            rc.append(recall_at(ranked, qrels[qid]))
        return {"ndcg@10": round(sum(nd) / len(nd), 4), "recall@100": round(sum(rc) / len(rc), 4)}

    out = {"queries": len(queries), "query_seconds": round(seconds, 1),
           "keyword": score(lambda legs: [key for key, _ in legs["keyword"]]),
           **{f"stock_{name}": score(lambda legs, run=run: [
               key for key, _ in run[next(q for q, v in per_query.items() if v is legs)]])
              for name, run in stock.items()},
           "vector": score(lambda legs: [key for key, _ in legs["vector"]])}
    out["hybrid"] = score(lambda legs: product[next(q for q, v in per_query.items() if v is legs)])
    out["hybrid_without_feedback"] = score(
        lambda legs: no_feedback[next(q for q, v in per_query.items() if v is legs)])
    out["plain_rrf"] = score(lambda legs: [key for key, _, _ in rrf(legs)])
    # `-n 10` with and without --diverse (MMR): nDCG@10 over the ten chunks returned
    out["hybrid_n10"] = score(lambda legs: top10[next(q for q, v in per_query.items() if v is legs)])
    out["hybrid_n10_diverse"] = score(lambda legs: diverse10[next(q for q, v in per_query.items() if v is legs)])
    for weight in NEIGHBOUR_WEIGHTS:  # adjacent chunks of one document, as conversation turns gain (#15)
        out[f"hybrid_doc_neighbours_{weight}"] = score(
            lambda legs, w=weight: neighbour_boosted(product_hits[next(q for q, v in per_query.items() if v is legs)],
                                                     w))
    variants = {}
    for rrf_k in (10, 30, 60, 100):
        for wv in (0.5, 0.75, 1.0, 1.5, 2.0):
            variants[f"rrf k={rrf_k} w_vector={wv}"] = score(
                lambda legs, rk=rrf_k, w=wv: [key for key, _, _ in rrf(legs, rk, {"vector": w})])["ndcg@10"]
    for alpha in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        variants[f"convex alpha={alpha}"] = score(
            lambda legs, a=alpha: [key for key, _, _ in convex(legs, a)])["ndcg@10"]
    out["fusion_variants_ndcg@10"] = variants
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", nargs="+", default=["cranfield", "scifact"])
    parser.add_argument("--embedder", nargs="+", default=["local"], help="local, hash (or openai if configured)")
    parser.add_argument("--chunk-tokens", type=int, default=None)
    parser.add_argument("--chunk-overlap", type=int, default=None)
    parser.add_argument("--k", type=int, default=100, help="candidates per retriever (chunks)")
    parser.add_argument("--queries", type=int, default=None,
                        help="only the first N queries of each dataset: a quick check (with --out: its figures "
                             "are not comparable)")
    parser.add_argument("--home", default=str(ROOT / "bench" / ".home"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retrieval.json"))
    args = parser.parse_args()

    home = Path(args.home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ.pop("LTM_DATABASE_URL", None)  # the embedded server in --home, whatever the shell points at
    from ltm_cli import Memory

    options = {}
    if args.chunk_tokens:
        options["chunk_tokens"] = args.chunk_tokens
    if args.chunk_overlap is not None:
        options["chunk_overlap"] = args.chunk_overlap
    results: dict = {}
    for embedder_name in args.embedder:
        base = Memory.open(home=str(home), embedder=embedder_name, **options)
        config = base.config
        for dataset in args.dataset:
            corpus, queries, qrels = load_beir(dataset)
            if args.queries:
                queries = dict(list(queries.items())[:args.queries])
            folder = write_corpus(dataset, corpus, home)
            memory = base.with_store(f"{dataset}-{embedder_name}-{config.chunk_tokens}-{config.chunk_overlap}")
            start = time.perf_counter()
            summary = memory.docs.ingest([str(folder)])
            ingest_s = time.perf_counter() - start
            row = {"documents": len(corpus), "chunks": summary.chunks, "ingest_seconds": round(ingest_s, 1),
                   "embedded_now": summary.embedded, "chunk_tokens": config.chunk_tokens,
                   "chunk_overlap": config.chunk_overlap}
            row.update(evaluate(memory, queries, qrels, args.k))
            row["reference"] = REFERENCE.get(dataset)
            key = f"{dataset}/{embedder_name}/{config.chunk_tokens}-{config.chunk_overlap}"
            results[key] = row
            best = max(row.get("fusion_variants_ndcg@10", {"-": 0}).items(), key=lambda kv: kv[1])
            print(f"{key}: ts_rank {row['stock_ts_rank']}  ts_rank_cd {row['stock_ts_rank_cd']}  "
                  f"ts_rank websearch {row['stock_ts_rank_websearch']}")
            print(f"{key}: keyword {row['keyword']}  vector {row['vector']}  plain RRF {row.get('plain_rrf')}  "
                  f"no feedback {row.get('hybrid_without_feedback')}  hybrid {row.get('hybrid')}  "
                  f"-n 10 {row.get('hybrid_n10')}  -n 10 --diverse {row.get('hybrid_n10_diverse')}  "
                  f"doc neighbours {[(w, row.get(f'hybrid_doc_neighbours_{w}')) for w in NEIGHBOUR_WEIGHTS]}  "
                  f"best fusion {best}  ({row['chunks']} chunks, ingest {row['ingest_seconds']}s, "
                  f"queries {row['query_seconds']}s)", flush=True)
        base.close()
    save(args.out, results, merge=True)


if __name__ == "__main__":
    main()
