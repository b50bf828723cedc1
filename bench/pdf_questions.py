"""Known-answer questions on the Bash Reference Manual PDF: the rank of the answer page in search, and the page
`ltm recall` cites first.

    python bench/pdf_questions.py [--embedder local] [--home DIR] [--budget 400]

bashref.pdf is ingested through the normal service layer into its own store (re-ingested whenever the pipeline
version changes). Each question's answer pages were found by reading the PDF's text; pages are the PDF's own
page numbers (as `location.page` and citations give them), not the numbers printed on them (6 lower). A hit is a
search result on an answer page; hit@1 and hit@5 count questions answered at rank 1 and within the first 5.
Figures go to stdout and bench/results/pdf_questions.json.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

PDF = ROOT.parent / "shared" / "data" / "pdf" / "manuals" / "bashref.pdf"
QUESTIONS = {  # question -> the pages that answer it
    "how do I redirect stderr": {48, 49},  # `ls > dirlist 2>&1`; 3.6.4 Redirecting Standard Output and Error
    "what does set -e do": {80, 81},  # 4.3.1 The Set Builtin, -e "Exit immediately if…"
    "how do I define an alias": {67, 115},  # the alias builtin; 6.6 Aliases
    "how do I change the prompt PS1": {120},  # 6.9 Controlling the Prompt
    "here document syntax": {50},  # 3.6.6 Here Documents
    "how do I declare an associative array": {116},  # 6.7 Arrays, `declare -A name`
}
RUNNING_HEADER = re.compile(r"(?:Chapter \d+|Appendix [A-D]): [^\n]*? \d+(?:\n|$)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="local", help="local (default), hash, or openai if configured")
    parser.add_argument("--home", default=str(ROOT / "bench" / ".home"))
    parser.add_argument("--store", default="bench-bashref")
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pdf_questions.json"))
    args = parser.parse_args()
    os.environ.pop("LTM_DATABASE_URL", None)  # the embedded server in --home, whatever the shell points at
    from ltm_cli import Memory

    with Memory.open(args.store, home=args.home, embedder=args.embedder) as memory:
        summary = memory.docs.ingest([str(PDF)])
        print("ingest: " + ", ".join(f"{f.status} {f.chunks} chunks" for f in summary.files)
              + f" in {summary.seconds:.0f}s")
        detail = memory.docs.show(str(PDF))
        chunks = detail.chunks
        marked = sorted({c.location["page"] for c in chunks if c.location.get("toc")})
        headers = sum(1 for c in chunks if RUNNING_HEADER.search(c.text))
        print(f"{len(chunks)} chunks; {headers} carry a running header; contents/index pages marked: {marked}")
        rows = {}
        for question, pages in QUESTIONS.items():
            hits = memory.search(question, limit=10)
            ranks = [h.rank for h in hits if h.location.get("page") in pages]
            recalled = memory.recall(question, budget=args.budget)
            first = recalled.passages[0].location.get("page") if recalled.passages else None
            rows[question] = {"answer_pages": sorted(pages), "rank": ranks[0] if ranks else None,
                              "top_pages": [h.location.get("page") for h in hits[:5]],
                              "recall_first_page": first, "recall_pages": [p.location.get("page")
                                                                           for p in recalled.passages]}
            print(f"{question!r:45} answer {sorted(pages)}  rank {rows[question]['rank']}  top5 "
                  f"{rows[question]['top_pages']}  recall cites {rows[question]['recall_pages']}")
        found = [row["rank"] for row in rows.values()]
        result = {"embedder": args.embedder, "chunks": len(chunks), "chunks_with_running_header": headers,
                  "toc_pages": marked, "questions": rows,
                  "hit@1": sum(1 for r in found if r == 1) / len(found),
                  "hit@5": sum(1 for r in found if r is not None and r <= 5) / len(found),
                  "recall_first_on_answer_page": sum(1 for q, row in rows.items()
                                                     if row["recall_first_page"] in QUESTIONS[q]) / len(rows)}
        print(f"hit@1 {result['hit@1']:.2f}  hit@5 {result['hit@5']:.2f}  recall's first passage on an answer page "
              f"{result['recall_first_on_answer_page']:.2f}")
        save(args.out, {args.embedder: result}, merge=True)


if __name__ == "__main__":
    main()
