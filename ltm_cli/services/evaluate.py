"""Retrieval quality: golden question files, the rank at which each answer comes back, and the metrics.

A golden file lists questions and what counts as a hit for each (a source glob, a page or page range, a heading,
an OpenAPI operation, a conversation turn, a piece of the answer text; all criteria of an answer must hold, any
answer will do). `evaluate` asks every question through a search function (`Memory.search`) and scores the
first matching result: hit@1/5/10, MRR@10 and nDCG@10 (binary relevance, one relevant answer per question, so
nDCG@10 = 1 / log2(1 + rank)). `compare` holds a report against an earlier one: the CI gate.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from ltm_cli.services.search import Hit
    from ltm_cli.storage.engine import Database
    from ltm_cli.storage.stores import StoreRef

MODES = ("hybrid", "vector", "keyword")
KINDS = ("docs", "history", "all")
METRICS = ("hit@1", "hit@5", "hit@10", "mrr@10", "ndcg@10")
CUTOFF = 10  # MRR and nDCG look at the first 10 results
CRITERIA = ("source", "page", "heading", "operation", "conversation", "seq", "text")
DOC_CRITERIA = frozenset({"source", "page", "heading", "operation"})
TURN_CRITERIA = frozenset({"conversation", "seq"})
ITEM_KEYS = ("question", "kind", "answers", *CRITERIA)
TOP_KEYS = ("description", "defaults", "items")
_OPERATION = re.compile(r"^(get|put|post|delete|patch|head|options|trace)\s+(/\S*)$", re.I)
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-|–|\.\.)\s*(\d+)\s*$")

Search = Callable[..., "list[Hit]"]  # Memory.search: (query, *, kind, mode, limit) -> hits


# -- the golden file -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """What counts as a hit: every criterion given must hold."""

    source: str | None = None  # glob over the document's source (whole path, or its tail after a /)
    page: tuple[int, int] | None = None
    heading: str | None = None  # substring of the heading path, any case
    method: str | None = None
    path: str | None = None
    operation_id: str | None = None
    conversation: str | None = None
    seq: tuple[int, int] | None = None
    text: str | None = None  # substring of the passage or message, any case, whitespace collapsed

    def matches(self, hit: Hit) -> bool:
        location = hit.location or {}
        if hit.kind == "docs":
            if self.conversation is not None or self.seq is not None:
                return False
        elif self.source or self.page or self.heading or self.method or self.operation_id:
            return False
        checks = (
            self.source is None or _glob(self.source).match(hit.source or "") is not None,
            self.page is None or _within(location.get("page"), self.page),
            self.heading is None or _folded(self.heading) in _folded(hit.heading or location.get("heading") or ""),
            self.method is None or (str(location.get("method", "")).upper() == self.method
                                    and location.get("path") == self.path),
            self.operation_id is None or location.get("operation_id") == self.operation_id,
            self.conversation is None or hit.conversation_id == self.conversation,
            self.seq is None or _within(hit.seq, self.seq),
            self.text is None or _folded(self.text) in _folded(hit.text),
        )
        return all(checks)

    def describe(self) -> str:
        parts = []
        if self.source:
            parts.append(self.source)
        if self.page:
            parts.append(f"page {_span(self.page)}")
        if self.heading:
            parts.append(f"heading ~ {self.heading!r}")
        if self.method:
            parts.append(f"{self.method} {self.path}")
        if self.operation_id:
            parts.append(self.operation_id)
        if self.conversation is not None:
            parts.append(f"{self.conversation}" + (f" #{_span(self.seq)}" if self.seq else ""))
        if self.text:
            parts.append(f"text ~ {self.text!r}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Item:
    number: int  # 1-based, as error messages and reports name it
    question: str
    kind: str
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class Golden:
    name: str
    items: tuple[Item, ...]
    sha256: str
    description: str | None = None

    def kinds(self) -> set[str]:
        return {item.kind for item in self.items}


def load_golden(path: str | Path, max_bytes: int) -> Golden:
    """A golden file from disk: JSONL when its name ends in .jsonl, else YAML (which includes JSON)."""
    from ltm_cli.parsing import read_text

    return parse_golden(read_text(path, max_bytes, f"golden file {path}"), str(path))


def parse_golden(text: str, name: str) -> Golden:
    """Golden questions from YAML/JSON text (a list of items, or a mapping with `defaults` and `items`) or JSONL
    (one item per line). Any problem is one InvalidInputError naming the item."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if _is_jsonl(text, name):
        raw_items, numbers = [], []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw_items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{name}: item {len(raw_items) + 1} (line {line_no}): not valid JSON: "
                                        f"{exc.msg}") from exc
            numbers.append(line_no)
        description, defaults = None, {}
        labels = [f"item {i} (line {n})" for i, n in enumerate(numbers, start=1)]
    else:
        data = _parse_yaml(text, name)
        description, defaults, raw_items = _top_level(data, name)
        labels = [f"item {i}" for i in range(1, len(raw_items) + 1)]
    if not raw_items:
        raise InvalidInputError(f"{name}: no items", hint="each item needs a question and what counts as a hit")
    base = _criteria(defaults, f"{name}: defaults", allow_kind=True)
    default_kind = base.pop("kind", "docs")
    items = tuple(_item(raw, i, f"{name}: {label}", base, default_kind)
                  for i, (raw, label) in enumerate(zip(raw_items, labels, strict=True), start=1))
    return Golden(name=name, items=items, sha256=digest, description=description)


def _is_jsonl(text: str, name: str) -> bool:
    if name.lower().endswith(".jsonl"):
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) > 1 and all(line.startswith("{") and line.rstrip().endswith("}") for line in lines)


def _parse_yaml(text: str, name: str) -> Any:
    from ltm_cli.loaders.base import LoadError
    from ltm_cli.loaders.openapi import parse_document  # the one YAML/JSON reader, with its alias-bomb guard

    try:
        return parse_document(text, name)
    except LoadError as exc:
        raise InvalidInputError(str(exc)) from exc


def _top_level(data: Any, name: str) -> tuple[str | None, dict, list]:
    if isinstance(data, list):
        return None, {}, data
    if not isinstance(data, dict):
        raise InvalidInputError(f"{name}: expected a list of items or a mapping with 'items', "
                                f"got {_type(data)}")
    unknown = [key for key in data if key not in TOP_KEYS]
    if unknown:
        raise InvalidInputError(f"{name}: unknown top-level key {unknown[0]!r} (expected {', '.join(TOP_KEYS)})")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InvalidInputError(f"{name}: defaults must be a mapping, got {_type(defaults)}")
    items = data.get("items")
    if not isinstance(items, list):
        raise InvalidInputError(f"{name}: 'items' must be a list of questions, got {_type(items)}")
    description = data.get("description")
    return (str(description) if description is not None else None), defaults, items


def _item(raw: Any, number: int, where: str, base: dict, default_kind: str) -> Item:
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where}: expected a mapping with 'question', got {_type(raw)}")
    unknown = [key for key in raw if key not in ITEM_KEYS]
    if unknown:
        raise InvalidInputError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(ITEM_KEYS)})")
    question = raw.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InvalidInputError(f"{where}: 'question' must be a non-empty string")
    kind = raw.get("kind", default_kind)
    if kind not in KINDS:
        raise InvalidInputError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    shared = _merge(base, _criteria({k: v for k, v in raw.items() if k in CRITERIA}, where))
    if "answers" in raw:
        listed = raw["answers"]
        if not isinstance(listed, list) or not listed:
            raise InvalidInputError(f"{where}: 'answers' must be a non-empty list of criteria")
        merged = [_merge(shared, _criteria(answer, f"{where}: answer {i}")) for i, answer in enumerate(listed, 1)]
        labels = [f"{where}: answer {i}" for i in range(1, len(listed) + 1)]
    else:
        merged, labels = [shared], [where]
    answers = tuple(_answer(criteria, kind, label) for criteria, label in zip(merged, labels, strict=True))
    return Item(number=number, question=question.strip(), kind=kind, answers=answers)


def _criteria(raw: Any, where: str, *, allow_kind: bool = False) -> dict[str, Any]:
    """One mapping of criteria, checked and normalised (ranges as tuples, operations split)."""
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where}: expected a mapping of criteria, got {_type(raw)}")
    allowed = (*CRITERIA, "kind") if allow_kind else CRITERIA
    found: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            raise InvalidInputError(f"{where}: unknown criterion {key!r} (expected {', '.join(allowed)})")
        if key == "kind":
            if value not in KINDS:
                raise InvalidInputError(f"{where}: kind must be one of {', '.join(KINDS)}, got {value!r}")
            found[key] = value
        elif key in ("page", "seq"):
            found[key] = _range(value, key, where, low=1 if key == "page" else 0)
        elif key == "operation":
            found.update(_operation(value, where))
        elif key == "conversation" and isinstance(value, int) and not isinstance(value, bool):
            found[key] = str(value)
        else:
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
            found[key] = value.strip()
    return found


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Criteria of a narrower scope (item over defaults, answer over item) replace the wider ones; an operation
    given either way replaces the other way too."""
    operation = {"method", "path", "operation_id"}
    kept = {k: v for k, v in base.items() if not (operation & set(over) and k in operation)}
    return {**kept, **over}


def _range(value: Any, key: str, where: str, *, low: int) -> tuple[int, int]:
    bad = InvalidInputError(f"{where}: {key!r} must be a number or a range like 12-14, got {value!r}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        first = last = value
    elif isinstance(value, str) and value.strip().isdigit():
        first = last = int(value)
    elif isinstance(value, str) and _RANGE.match(value):
        first, last = (int(g) for g in _RANGE.match(value).groups())
    elif isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value):
        first, last = value
    else:
        raise bad
    if first < low:
        raise InvalidInputError(f"{where}: {key!r} must be at least {low}, got {value!r}")
    if last < first:
        raise InvalidInputError(f"{where}: {key!r} range {value!r} runs backwards (write it low-high)")
    return first, last


def _operation(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{where}: 'operation' must be 'METHOD /path' or an operation id, got {value!r}")
    match = _OPERATION.match(value.strip())
    if match:
        return {"method": match.group(1).upper(), "path": match.group(2)}
    if any(ch.isspace() for ch in value.strip()):
        raise InvalidInputError(f"{where}: 'operation' must be 'METHOD /path' (e.g. GET /users/{{id}}) or an "
                                f"operation id, got {value!r}")
    return {"operation_id": value.strip()}


def _answer(criteria: dict[str, Any], kind: str, where: str) -> Answer:
    if not criteria:
        raise InvalidInputError(f"{where}: no criterion says what counts as a hit",
                                hint=f"give one of: {', '.join(CRITERIA)}")
    keys = set(criteria) | ({"operation"} if {"method", "operation_id"} & set(criteria) else set())
    if "seq" in criteria and "conversation" not in criteria:
        raise InvalidInputError(f"{where}: 'seq' needs the 'conversation' it belongs to")
    if keys & DOC_CRITERIA and keys & TURN_CRITERIA:
        raise InvalidInputError(f"{where}: document criteria ({', '.join(sorted(keys & DOC_CRITERIA))}) and "
                                f"conversation criteria ({', '.join(sorted(keys & TURN_CRITERIA))}) never "
                                f"hold together", hint="list them as separate answers")
    if kind == "history" and keys & DOC_CRITERIA:
        raise InvalidInputError(f"{where}: {', '.join(sorted(keys & DOC_CRITERIA))} can never match kind history")
    if kind == "docs" and keys & TURN_CRITERIA:
        raise InvalidInputError(f"{where}: {', '.join(sorted(keys & TURN_CRITERIA))} can never match kind docs")
    return Answer(**criteria)


# -- scoring -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ItemResult:
    item: int
    question: str
    kind: str
    rank: int | None  # of the first result that matches an answer; None when none of the `limit` did
    metrics: dict[str, float]
    found: str | None  # where that result came from
    top: list[str]  # where the first three results came from


@dataclass(frozen=True)
class ModeResult:
    mode: str
    metrics: dict[str, float]  # means over the items, rounded to 4 places
    missed: list[int]  # items whose answer is not in the first 10
    items: list[ItemResult]


@dataclass(frozen=True)
class Drop:
    mode: str
    metric: str
    baseline: float
    current: float


@dataclass(frozen=True)
class Comparison:
    baseline: str
    tolerance: float
    drops: list[Drop]  # metrics that fell by more than the tolerance
    deltas: dict[str, dict[str, float]]  # mode -> metric -> current minus baseline, for modes in both
    newly_missed: dict[str, list[int]]  # mode -> items in the baseline's top 10 that are not any more
    notes: list[str]  # what makes the comparison less than like for like


@dataclass(frozen=True)
class Report:
    golden: str
    golden_sha256: str
    store: str
    embedder: str | None  # provider/model the vector and hybrid modes used
    limit: int
    items: int
    modes: dict[str, ModeResult]
    baseline: Comparison | None = None


def item_metrics(rank: int | None) -> dict[str, float]:
    """The metrics of one question whose first relevant result is at `rank` (None: not found)."""
    scored = rank is not None and rank <= CUTOFF
    return {
        "hit@1": float(rank is not None and rank <= 1),
        "hit@5": float(rank is not None and rank <= 5),
        "hit@10": float(scored),
        "mrr@10": round(1.0 / rank, 4) if scored else 0.0,
        "ndcg@10": round(1.0 / math.log2(rank + 1), 4) if scored else 0.0,
    }


def mean_metrics(per_item: Sequence[Mapping[str, float]]) -> dict[str, float]:
    if not per_item:
        return dict.fromkeys(METRICS, 0.0)
    return {name: round(sum(m[name] for m in per_item) / len(per_item), 4) for name in METRICS}


def first_match(item: Item, hits: Iterable[Hit]) -> tuple[int, Hit] | None:
    for hit in hits:
        if any(answer.matches(hit) for answer in item.answers):
            return hit.rank, hit
    return None


def where(hit: Hit) -> str:
    """A result's origin in a few words: `bashref.pdf page 49`, `openapi.yaml GET /meters`, `ticket-42 #3`."""
    from ltm_cli.services.search import citation

    if hit.kind == "history":
        return f"{hit.conversation_id} #{hit.seq}"
    cited = citation(hit.location or {})
    return f"{Path(hit.source or '').name} {cited}".strip()


def evaluate(golden: Golden, search: Search, *, modes: Sequence[str] = ("hybrid",), limit: int = 10,
             store: str = "", embedder: str | None = None) -> Report:
    """Ask every question of `golden` in every mode and score where its answer comes back."""
    results = {}
    for mode in modes:
        rows = []
        for item in golden.items:
            hits = search(item.question, kind=item.kind, mode=mode, limit=limit)
            match = first_match(item, hits)
            rank = match[0] if match else None
            rows.append(ItemResult(item=item.number, question=item.question, kind=item.kind, rank=rank,
                                   metrics=item_metrics(rank), found=where(match[1]) if match else None,
                                   top=[where(hit) for hit in hits[:3]]))
        results[mode] = ModeResult(mode=mode, metrics=mean_metrics([r.metrics for r in rows]),
                                   missed=[r.item for r in rows if not r.metrics["hit@10"]], items=rows)
    return Report(golden=golden.name, golden_sha256=golden.sha256, store=store, embedder=embedder, limit=limit,
                  items=len(golden.items), modes=results)


def modes_for(mode: str) -> tuple[str, ...]:
    if mode == "all":
        return MODES
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}", hint="use hybrid, vector, keyword or all")
    return (mode,)


def require_memory(db: Database, store: StoreRef, kinds: set[str]) -> None:
    """Refuse to score an empty store: every question would miss, and a CI gate would compare noise."""
    from ltm_cli.services.documents import list_documents
    from ltm_cli.services.history import list_conversations

    need_docs = bool(kinds & {"docs", "all"})
    need_history = bool(kinds & {"history", "all"})
    has_docs = need_docs and bool(list_documents(db, store, limit=1))
    has_history = need_history and bool(list_conversations(db, store, limit=1))
    hint = "ingest the documents first (ltm ingest PATH) or choose the store with --store"
    if "all" in kinds and not (has_docs or has_history):
        raise NotFoundError(f"store {store.name!r} holds no documents and no conversations to evaluate", hint=hint)
    if "docs" in kinds and not has_docs:
        raise NotFoundError(f"store {store.name!r} holds no documents to evaluate", hint=hint)
    if "history" in kinds and not has_history:
        raise NotFoundError(f"store {store.name!r} holds no conversations to evaluate",
                            hint="import them first (ltm history import FILE) or choose the store with --store")


# -- the gate ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Baseline:
    name: str
    golden_sha256: str | None
    limit: int | None
    embedder: str | None
    metrics: dict[str, dict[str, float]]  # mode -> metric -> value
    hits: dict[str, set[int]] = field(default_factory=dict)  # mode -> items found in the top 10


def load_baseline(path: str | Path, max_bytes: int) -> Baseline:
    from ltm_cli.parsing import read_text

    return parse_baseline(read_text(path, max_bytes, f"baseline {path}"), str(path))


def parse_baseline(text: str, name: str) -> Baseline:
    """An earlier `ltm eval --json` result."""
    not_ours = InvalidInputError(f"{name} is not an `ltm eval --json` result",
                                 hint="write one with: ltm eval GOLDEN --json > eval-baseline.json")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{name}: not valid JSON (line {exc.lineno}): {exc.msg}") from exc
    modes = data.get("modes") if isinstance(data, dict) else None
    if not isinstance(modes, dict) or not modes:
        raise not_ours
    metrics: dict[str, dict[str, float]] = {}
    hits: dict[str, set[int]] = {}
    for mode, result in modes.items():
        values = result.get("metrics") if isinstance(result, dict) else None
        if mode not in MODES or not isinstance(values, dict):
            raise not_ours
        metrics[mode] = {}
        for metric in METRICS:
            value = values.get(metric)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInputError(f"{name}: {mode} has no number for {metric}", hint=not_ours.hint)
            metrics[mode][metric] = float(value)
        rows = result.get("items")
        if isinstance(rows, list):
            hits[mode] = {row["item"] for row in rows if isinstance(row, dict) and isinstance(row.get("item"), int)
                          and isinstance(row.get("metrics"), dict) and row["metrics"].get("hit@10")}
    limit = data.get("limit")
    return Baseline(name=name, golden_sha256=data.get("golden_sha256"), limit=limit if isinstance(limit, int) else None,
                    embedder=data.get("embedder"), metrics=metrics, hits=hits)


def check_gate(baseline: Baseline, modes: Sequence[str], tolerance: float) -> None:
    """Before any search runs: a tolerance that makes sense and a baseline with a mode to compare."""
    if not 0 <= tolerance <= 1:
        raise InvalidInputError(f"--tolerance must be from 0 to 1, got {tolerance}")
    if not any(mode in baseline.metrics for mode in modes):
        raise InvalidInputError(f"{baseline.name} has no results for mode {', '.join(modes)} "
                                f"(it has {', '.join(baseline.metrics)})", hint="run with the same --mode")


def compare(report: Report, baseline: Baseline, *, tolerance: float = 0.02) -> Report:
    """The report with its comparison: which metrics dropped by more than `tolerance` since the baseline."""
    check_gate(baseline, list(report.modes), tolerance)
    shared = [mode for mode in report.modes if mode in baseline.metrics]
    notes = []
    if baseline.golden_sha256 and baseline.golden_sha256 != report.golden_sha256:
        notes.append("the golden file changed since the baseline")
    if baseline.limit is not None and baseline.limit != report.limit:
        notes.append(f"the baseline searched {baseline.limit} results deep, this run {report.limit}")
    if baseline.embedder and report.embedder and baseline.embedder != report.embedder:
        notes.append(f"the baseline used {baseline.embedder}, this run {report.embedder}")
    unmatched = [mode for mode in report.modes if mode not in shared]
    if unmatched:
        notes.append(f"the baseline has no {', '.join(unmatched)} results: not compared")
    drops, deltas, newly_missed = [], {}, {}
    for mode in shared:
        current = report.modes[mode]
        deltas[mode] = {m: round(current.metrics[m] - baseline.metrics[mode][m], 4) for m in METRICS}
        drops += [Drop(mode, m, baseline.metrics[mode][m], current.metrics[m]) for m in METRICS
                  if baseline.metrics[mode][m] - current.metrics[m] > tolerance + 1e-9]
        if mode in baseline.hits:
            newly_missed[mode] = sorted(set(current.missed) & baseline.hits[mode])
    comparison = Comparison(baseline=baseline.name, tolerance=tolerance, drops=drops, deltas=deltas,
                            newly_missed=newly_missed, notes=notes)
    return replace(report, baseline=comparison)


# -- helpers -----------------------------------------------------------------------------------------------
def _glob(pattern: str) -> re.Pattern[str]:
    """The same reading of a glob as `--source` (`*` and `?`, whole source or the part after a slash)."""
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(f"^(?:{body}|.*/{body})$", re.S)


def _within(value: Any, span: tuple[int, int]) -> bool:
    return isinstance(value, int) and span[0] <= value <= span[1]


def _span(span: tuple[int, int] | None) -> str:
    if span is None:
        return ""
    return str(span[0]) if span[0] == span[1] else f"{span[0]}-{span[1]}"


def _folded(text: str) -> str:
    return " ".join(text.split()).casefold()


def _type(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(type(value),
                                                                                       type(value).__name__)
