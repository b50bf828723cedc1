"""Import (and export) speed of `ltm import` with vectors: chunks/s and peak RSS on a generated store.

    python bench/transfer.py [--chunks 20000] [--per-doc 50] [--out bench/transfer.json]

Generates an export file of synthetic documents (hash-embedder space, vectors included), imports it into a
fresh store of a throwaway embedded PostgreSQL (LTM_HOME in a temp dir unless set), then exports it again."""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(path: Path, chunks: int, per_doc: int, dim: int) -> None:
    import numpy as np

    from ltm_cli.services.embedding import content_hash
    from ltm_cli.services.transfer import FORMAT, FORMAT_VERSION

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(5000)]
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"type": "header", "format": FORMAT, "format_version": FORMAT_VERSION, "vectors": True,
                              "spaces": [{"id": "1", "provider": "hash", "model": "feature-hash-v1", "dim": dim}]})
                  + "\n")
        records = 0
        for d in range(0, chunks, per_doc):
            body = []
            for o in range(min(per_doc, chunks - d)):
                text = " ".join(random.choices(words, k=120))
                heading = f"Doc {d} > Section {o}"
                vector = rng.standard_normal(dim).astype("<f2")
                body.append({"ordinal": o, "heading": heading, "text": text, "location": {"section": o},
                             "token_count": 150, "embed_hash": content_hash(f"{heading}\n\n{text}").hex(),
                             "vectors": {"1": base64.b64encode(vector.tobytes()).decode()}})
            out.write(json.dumps({"type": "document", "source": f"/bench/doc-{d}.md",
                                  "content_hash": content_hash(f"doc {d}").hex(), "media_type": "text/markdown",
                                  "title": f"Doc {d}", "metadata": {}, "tags": ["bench"],
                                  "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
                                  "chunks": body}) + "\n")
            records += 1
        out.write(json.dumps({"type": "end", "records": records}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--per-doc", type=int, default=50)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    os.environ.setdefault("LTM_HOME", tempfile.mkdtemp(prefix="ltm-bench-transfer-"))
    os.environ["LTM_EMBEDDER"] = "hash"
    from ltm_cli import Memory

    work = Path(tempfile.mkdtemp(prefix="ltm-transfer-"))
    source = work / "in.jsonl"
    generate(source, args.chunks, args.per_doc, args.dim)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    store = f"bench-transfer-{int(time.time())}"
    with Memory.open(store) as memory:
        memory.status()  # start the server and migrate before timing
        started = time.perf_counter()
        summary = memory.import_(str(source))
        seconds = time.perf_counter() - started
        rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        exported = memory.export(str(work / "out.jsonl.gz"), vectors=True)
        export_seconds = time.perf_counter() - started
    rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {
        "chunks": summary.chunks, "documents": summary.added.get("document", 0),
        "file_mb": round(source.stat().st_size / 1e6, 1),
        "import_seconds": round(seconds, 2), "import_chunks_per_s": round(summary.chunks / seconds),
        "vectors_reused": summary.vectors_reused, "vectors_computed": summary.vectors_computed,
        "export_seconds": round(export_seconds, 2),
        "export_chunks_per_s": round(exported.records.get("document", 0) * args.per_doc / export_seconds),
        "peak_rss_mb_before": round(rss_before / 1024), "peak_rss_mb_after_import": round(rss_import / 1024),
        "peak_rss_mb_end": round(rss_end / 1024), "problems": summary.problems,
    }
    print(json.dumps(figures, indent=2))
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
