"""Finding the right API operation: hit@1, hit@5 and MRR@10 of natural questions over real OpenAPI specs.

    python bench/api_questions.py [--spec stripe docker …] [--modes hybrid keyword vector] [--label after]
                                  [--no-reference] [--home DIR]

Each spec in ../shared/data/openapi is ingested with the `local` embedder into a store of a fresh temporary
LTM_HOME (or --home, kept between runs and re-ingested with force: the embedding cache makes re-runs cheap).
The questions (bench/api_questions/<spec>.jsonl: `question`, `expected` "METHOD /path", optional `also`, other
operations that answer it just as well) run through `Memory.search`. Two rankings are scored:
- returned: the rank of the first result from an expected operation in the list `ltm search` prints;
- operations: the same list with each operation counted once, at its best chunk (what ranking operations as
  units would give).
The reference is what plain libraries do with one text per operation (`METHOD /path`, operationId, summary,
description, parameter names): BM25 (bm25s-style: \\w\\w+ tokens, English stop words, k1 1.5, b 0.75), MiniLM
cosine (ltm's local model, outside the database) and their reciprocal rank fusion (k 60).
Figures go to stdout and bench/results/api_questions.json (keys "<label>/<spec>", merged across runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

if TYPE_CHECKING:
    from ltm_cli import Memory

OPENAPI = ROOT.parent / "shared" / "data" / "openapi"
QUESTIONS = ROOT / "bench" / "api_questions"
SPECS = {
    "stripe": "stripe/spec3.yaml",
    "openmeter": "openmeter/openapi.yaml",
    "digitalocean": "digitalocean/specification/DigitalOcean-public.v2.yaml",
    "openai": "openai/openapi.yaml",
    "docker": "docker-engine/swagger.yaml",
}
MODES = ("hybrid", "keyword", "vector")
RETURNED = 50  # results asked for: enough to rank operations after collapsing chunks


def load_questions(spec: str) -> list[dict[str, Any]]:
    lines = (QUESTIONS / f"{spec}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def gold(question: dict[str, Any]) -> set[str]:
    return {question["expected"], *question.get("also", [])}


def label_of(location: dict[str, Any]) -> str | None:
    return f"{location['method']} {location['path']}" if "method" in location else None


def first_rank(labels: list[str | None], wanted: set[str]) -> int | None:
    return next((i for i, label in enumerate(labels, start=1) if label in wanted), None)


def collapse(labels: list[str | None]) -> list[str | None]:
    """Each operation once, at its best (first) position; non-operation chunks kept as they come."""
    seen: set[str] = set()
    out = []
    for label in labels:
        if label is None or label not in seen:
            out.append(label)
            if label is not None:
                seen.add(label)
    return out


def scores(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks) or 1
    return {"hit@1": round(sum(1 for r in ranks if r == 1) / n, 3),
            "hit@5": round(sum(1 for r in ranks if r and r <= 5) / n, 3),
            "mrr@10": round(sum(1 / r for r in ranks if r and r <= 10) / n, 3)}


# -- the reference: plain libraries over one text per operation ---------------------------------------
_STOP_WORDS = """
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves
"""
_STOP = set(re.findall(r"\w+", _STOP_WORDS))


def operation_texts(spec_path: Path) -> dict[str, str]:
    """`METHOD /path`, operationId, summary, description and parameter names of every operation."""
    from ltm_cli.loaders.openapi import _clip, _operations, _Resolver, parse_document
    from ltm_cli.loaders.text import decode

    spec = parse_document(decode(spec_path.read_bytes(), spec_path), spec_path.name)
    resolver = _Resolver(spec_path, spec)
    texts = {}
    for method, path, op, base, shared in _operations(spec, resolver, spec_path):
        names = []
        for param in [*shared, *(op.get("parameters") or [])]:
            param, _, _ = resolver.resolve(param, base)
            if isinstance(param, dict) and isinstance(param.get("name"), str):
                names.append(param["name"])
        parts = [f"{method} {path}", str(op.get("operationId") or ""), _clip(op.get("summary"), 200),
                 _clip(op.get("description")), " ".join(names)]
        texts[f"{method} {path}"] = "\n".join(p for p in parts if p)
    return texts


def _tokens(text: str) -> list[str]:
    return [t for t in re.findall(r"(?u)\b\w\w+\b", text.lower()) if t not in _STOP]


def bm25_rankings(texts: dict[str, str], queries: list[str], k1: float = 1.5, b: float = 0.75) -> list[list[str]]:
    labels = list(texts)
    docs = [Counter(_tokens(texts[label])) for label in labels]
    lengths = [sum(d.values()) for d in docs]
    avg = sum(lengths) / len(lengths)
    df = Counter(term for d in docs for term in d)
    n = len(docs)
    out = []
    for query in queries:
        terms = set(_tokens(query))
        scored = []
        for label, doc, length in zip(labels, docs, lengths, strict=True):
            score = 0.0
            for term in terms & doc.keys():
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                tf = doc[term]
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg))
            if score > 0:
                scored.append((score, label))
        out.append([label for _, label in sorted(scored, key=lambda item: (-item[0], item[1]))])
    return out


def vector_rankings(embedder: Any, texts: dict[str, str], queries: list[str]) -> list[list[str]]:
    import numpy as np

    labels = list(texts)
    matrix = np.vstack([embedder.embed([texts[label] for label in labels[i:i + 64]])
                        for i in range(0, len(labels), 64)])
    out = []
    for qvec in embedder.embed(queries):
        order = np.argsort(-(matrix @ qvec), kind="stable")
        out.append([labels[i] for i in order])
    return out


def rrf_rankings(*runs: list[list[str]], k: int = 60) -> list[list[str]]:
    out = []
    for lists in zip(*runs, strict=True):
        fused: dict[str, float] = {}
        for ranking in lists:
            for rank, label in enumerate(ranking, start=1):
                fused[label] = fused.get(label, 0.0) + 1 / (k + rank)
        out.append([label for label, _ in sorted(fused.items(), key=lambda item: (-item[1], item[0]))])
    return out


def reference(embedder: Any, spec_path: Path, questions: list[dict[str, Any]]) -> dict[str, Any]:
    texts = operation_texts(spec_path)
    queries = [q["question"] for q in questions]
    bm25 = bm25_rankings(texts, queries)
    minilm = vector_rankings(embedder, texts, queries)
    out: dict[str, Any] = {}
    for name, run in {"bm25": bm25, "minilm": minilm, "rrf": rrf_rankings(bm25, minilm)}.items():
        ranks = [first_rank(ranking, gold(q)) for ranking, q in zip(run, questions, strict=True)]
        out[name] = {**scores(ranks), "ranks": ranks}
    return out


def pooled(rows: list[dict[str, Any]], modes: list[str]) -> dict[str, Any]:
    """Several specs' questions scored as one set (each question counts once, whatever its spec)."""
    out: dict[str, Any] = {"questions": sum(row["questions"] for row in rows)}
    for mode in modes:
        out[mode] = {view: scores([q[key] for row in rows for q in row[mode]["questions"]])
                     for view, key in (("returned", "returned"), ("operations", "operation"))}
    if all("reference" in row for row in rows):
        out["reference"] = {name: scores([r for row in rows for r in row["reference"][name]["ranks"]])
                            for name in ("bm25", "minilm", "rrf")}
    return out


def scores_of(run: dict[str, Any]) -> dict[str, float]:
    """A reference run's scores without its ranks: what ltm's rows print, so the two read side by side."""
    return {key: run[key] for key in ("hit@1", "hit@5", "mrr@10")}


def summary_line(row: dict[str, Any]) -> str:
    ref = row.get("reference")
    parts = [f"{mode} {row[mode]['returned']}" for mode in MODES if mode in row]
    if ref:
        parts.append("reference " + "  ".join(f"{name} {scores_of(ref[name])}" for name in ("bm25", "minilm", "rrf")))
    return "  ".join(parts)


# -- ltm -------------------------------------------------------------------------------------------------
def check_questions(memory: Memory, questions: list[dict[str, Any]], spec: str) -> None:
    """Every expected operation must exist in the stored spec: a typo would silently score as a miss."""
    from sqlalchemy import text

    with memory.db.connect() as conn:
        rows = conn.execute(text("SELECT DISTINCT c.location->>'method' AS m, c.location->>'path' AS p FROM chunks c "
                                 "JOIN stores s ON s.id = c.store_id WHERE s.name = :store AND c.location ? 'method'"),
                            {"store": memory.store.name}).all()
    known = {f"{r.m} {r.p}" for r in rows}
    missing = sorted(label for q in questions for label in gold(q) if label not in known)
    if missing:
        raise SystemExit(f"{spec}: expected operations not in the spec: {', '.join(missing)}")


def ask(memory: Memory, questions: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    returned, operations, detail = [], [], []
    start = time.perf_counter()
    for q in questions:
        labels = [label_of(h.location) for h in memory.search(q["question"], mode=mode, limit=RETURNED)]
        wanted = gold(q)
        returned.append(first_rank(labels, wanted))
        operations.append(first_rank(collapse(labels), wanted))
        detail.append({"id": q["id"], "returned": returned[-1], "operation": operations[-1],
                       "top": collapse(labels)[:3]})
    seconds = time.perf_counter() - start
    return {"returned": scores(returned), "operations": scores(operations),
            "seconds_per_query": round(seconds / max(len(questions), 1), 3), "questions": detail}


def run_spec(memory: Memory, spec: str, modes: list[str], with_reference: bool) -> dict[str, Any]:
    spec_path = OPENAPI / SPECS[spec]
    questions = load_questions(spec)
    start = time.perf_counter()
    summary = memory.docs.ingest([str(spec_path)], force=True)
    if summary.failed:
        raise SystemExit(f"{spec}: ingest failed: {summary.failed[0].error}")
    row: dict[str, Any] = {"questions": len(questions), "chunks": summary.chunks,
                           "ingest_seconds": round(time.perf_counter() - start, 1)}
    check_questions(memory, questions, spec)
    for mode in modes:
        row[mode] = ask(memory, questions, mode)
    if with_reference:
        row["reference"] = reference(memory.embedder, spec_path, questions)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--label", default="current", help="key prefix in the results file (e.g. before, after)")
    parser.add_argument("--embedder", default="local")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain-library reference")
    parser.add_argument("--home", default=None, help="keep the server and cache here (default: a fresh temp dir)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api_questions.json"))
    args = parser.parse_args()

    os.environ.pop("LTM_DATABASE_URL", None)  # the embedded server in the home below, whatever the shell says
    from ltm_cli import Memory
    from ltm_cli.storage.server import EmbeddedServer

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="ltm-bench-api-"))
    home.mkdir(parents=True, exist_ok=True)
    base = Memory.open("api-questions", home=str(home), embedder=args.embedder)
    results: dict[str, Any] = {}
    try:
        for spec in args.spec:
            row = run_spec(base.with_store(f"api-{spec}"), spec, args.modes, not args.no_reference)
            results[f"{args.label}/{spec}"] = row
            print(f"{args.label}/{spec}: {row['questions']} questions, {row['chunks']} chunks, ingest "
                  f"{row['ingest_seconds']}s  {summary_line(row)}", flush=True)
        others = [results[f"{args.label}/{spec}"] for spec in args.spec if spec != "stripe"]
        if len(others) > 1:
            results[f"{args.label}/others"] = pooled(others, args.modes)
            print(f"{args.label}/others: {summary_line(results[f'{args.label}/others'])}", flush=True)
    finally:
        base.close()
        if not args.home:
            EmbeddedServer(home).stop()
            shutil.rmtree(home, ignore_errors=True)
    save(args.out, results, merge=True)


if __name__ == "__main__":
    main()
