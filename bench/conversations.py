"""Conversation memory on LoCoMo: evidence recall@k of `ltm history search`, per mode.

    python bench/conversations.py [--embedder local hash] [--files 26 30 41 42 43] [--questions N]

Each LoCoMo conversation is converted here (not in the product) to the OpenAI chat format — speaker A as user,
speaker B as assistant, each turn with the speaker's name, its session date as its time and its dialogue id in
metadata — imported with `ltm history import` (the real CLI, as a subprocess), and each question (categories
1-4; 5 has no evidence) is asked as a history search within its conversation. A question scores all@k when
every gold turn is in the top k, any@k when at least one is. Figures go to stdout and
bench/results/conversations.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.results_file import save  # noqa: E402 (needs the path above)

DATA = ROOT.parent / "shared" / "data" / "locomo"
REFERENCE_ANY10 = {"bm25": 0.582, "minilm": 0.578, "rrf": 0.626}


def session_time(text: str) -> dt.datetime:
    """'1:56 pm on 8 May, 2023' -> an aware datetime (LoCoMo gives no zone: taken as UTC)."""
    return dt.datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=dt.UTC)


def to_openai(sample: dict, conversation_id: str = "locomo") -> dict:
    speakers = {sample["speaker_a"]: "user", sample["speaker_b"]: "assistant"}
    messages = []
    number = 1
    while f"session_{number}" in sample:
        start = session_time(sample[f"session_{number}_date_time"])
        for index, turn in enumerate(sample[f"session_{number}"]):
            text = turn["text"]
            if turn.get("blip_caption"):
                text += f" [shares a photo: {turn['blip_caption']}]"
            messages.append({"role": speakers[turn["speaker"]], "name": turn["speaker"], "content": text,
                             "created_at": (start + dt.timedelta(seconds=index)).isoformat(),
                             "metadata": {"dia_id": turn["dia_id"], "session": number}})
        number += 1
    return {"id": conversation_id, "title": f"{sample['speaker_a']} & {sample['speaker_b']}", "messages": messages}


def gold(qa: dict) -> set[str]:
    return {part.strip() for item in qa["evidence"] for part in item.split(";") if part.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", nargs="+", default=["local"])
    parser.add_argument("--files", nargs="+", default=["26", "30", "41", "42", "43"])
    parser.add_argument("--questions", type=int, default=None,
                        help="only the first N questions of each file: a quick check (with --out: its figures "
                             "are not comparable)")
    parser.add_argument("--home", default=str(ROOT / "bench" / ".home"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "conversations.json"))
    args = parser.parse_args()

    os.environ["LTM_HOME"] = str(Path(args.home))
    Path(args.home).mkdir(parents=True, exist_ok=True)
    os.environ.pop("LTM_DATABASE_URL", None)
    from bench.legs import leg_results, row_keys
    from ltm_cli import Memory
    from ltm_cli.services.filters import Filters
    from ltm_cli.services.fusion import rrf

    results: dict = {}
    for embedder_name in args.embedder:
        os.environ["LTM_EMBEDDER"] = embedder_name  # for the `ltm history import` subprocess
        store = f"locomo-{embedder_name}"
        memory = Memory.open(store, home=args.home, embedder=embedder_name)
        scores: dict[str, dict[str, list[float]]] = {}
        legs_dump = []
        import_s = query_s = 0.0
        questions = 0
        for name in args.files:
            sample = json.loads((DATA / f"{name}.json").read_text())
            conversation = f"locomo-{name}"
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(to_openai(sample, conversation), handle)
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "ltm_cli", "--store", store, "history", "import",
                                   handle.name, "--json"], capture_output=True, text=True, env=os.environ)
            import_s += time.perf_counter() - start
            os.unlink(handle.name)
            if done.returncode != 0:
                raise SystemExit(f"import failed: {done.stderr}")
            filters = Filters(kind="history", conversation=conversation)
            start = time.perf_counter()
            asked = [qa for qa in sample["qa"] if qa.get("category") != 5 and gold(qa)][:args.questions]
            for qa in asked:
                questions += 1
                legs = leg_results(memory, qa["question"], filters=filters, k=50)
                ids = {key[1] for leg in legs.values() for key, _ in leg}
                dia = {i: meta.get("dia_id") for i, meta in row_keys(memory.db, "history", sorted(ids)).items()}
                legs_dump.append({"file": name, "qa": qa, "legs": legs, "dia": dia})
                rankings = {"keyword": [k for k, _ in legs["keyword"]], "vector": [k for k, _ in legs["vector"]],
                            "hybrid": [k for k, _, _ in rrf(legs)]}
                product = memory.search(qa["question"], kind="history", conversation=conversation, limit=10)
                rankings["hybrid (ltm search)"] = [("history", h.id) for h in product]
                want = gold(qa)
                for mode, ranked in rankings.items():
                    got = [dia.get(i) for _, i in ranked] if mode != "hybrid (ltm search)" else \
                        [h.metadata.get("dia_id") for h in product]
                    row = scores.setdefault(mode, {})
                    for k in (5, 10):
                        top = set(got[:k])
                        row.setdefault(f"all@{k}", []).append(float(want <= top))
                        row.setdefault(f"any@{k}", []).append(float(bool(want & top)))
            query_s += time.perf_counter() - start
        Path(args.home, f"legs-{store}.pkl").write_bytes(pickle.dumps(legs_dump))
        summary = {mode: {metric: round(sum(v) / len(v), 4) for metric, v in row.items()}
                   for mode, row in scores.items()}
        results[embedder_name] = {"questions": questions, "import_seconds": round(import_s, 1),
                                  "query_seconds": round(query_s, 1), "modes": summary,
                                  "reference_any@10": REFERENCE_ANY10}
        for mode, row in summary.items():
            print(f"{embedder_name} {mode:20s} {row}", flush=True)
        print(f"{embedder_name}: {questions} questions, import {import_s:.1f}s, queries {query_s:.1f}s")
        memory.close()
    save(args.out, results, merge=True)


if __name__ == "__main__":
    main()
