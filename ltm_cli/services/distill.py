"""`ltm history distill`: turns (above all those with an outcome) -> notes, proposed by a chat model.

The model answers in a JSON schema that ltm validates; anything else is an error with nothing written. Every
proposal of a run is validated before any is applied; each turn is distilled once (messages.distilled_at)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import EmbeddingError, InvalidInputError

if TYPE_CHECKING:
    from ltm_cli.config import Config
    from ltm_cli.memory import Memory

PROMPT_FILE = Path(__file__).resolve().parents[1] / "prompts" / "distill.md"
TURNS_PER_REQUEST = 40
LIVE_NOTES = 10  # live notes shown to the model with each batch of turns
SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["proposals"],
    "additionalProperties": False,
    "properties": {"proposals": {"type": "array", "maxItems": 50, "items": {
        "type": "object",
        "required": ["action"],
        "additionalProperties": False,
        "properties": {
            "action": {"enum": ["add", "supersede", "none"]},
            "text": {"type": "string", "minLength": 1, "maxLength": 20000},
            "about": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note_id": {"type": "integer"},
            "source_message_ids": {"type": "array", "items": {"type": "integer"}},
        },
        "allOf": [
            {"if": {"properties": {"action": {"const": "add"}}}, "then": {"required": ["text"]}},
            {"if": {"properties": {"action": {"const": "supersede"}}}, "then": {"required": ["note_id", "text"]}},
        ],
    }}},
}


class ChatError(EmbeddingError):
    """The chat model could not be reached, or answered outside the schema (exit 6, like embedding errors)."""


@dataclass
class Proposal:
    action: str
    text: str | None = None
    about: str | None = None
    tags: list[str] = field(default_factory=list)
    note_id: int | None = None
    sources: list[int] = field(default_factory=list)
    applied: str | None = None  # after applying: "added note N", "already note N", "superseded N by M"


@dataclass
class DistillSummary:
    turns: int = 0
    requests: int = 0
    proposals: list[Proposal] = field(default_factory=list)
    dry_run: bool = False
    model: str | None = None


def prompt_text(config: Config) -> str:
    path = Path(config.distill_prompt).expanduser() if config.distill_prompt else PROMPT_FILE
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read the distill prompt {path}: {exc.strerror}") from exc


def chat_json(config: Config, system: str, user: str) -> Any:
    """One chat-completions request asking for JSON in SCHEMA; the parsed answer."""
    import httpx

    if not config.chat_base_url or not config.chat_model:
        raise InvalidInputError("distill needs a chat model", hint="set LTM_CHAT_BASE_URL and LTM_CHAT_MODEL (any "
                                                                   "OpenAI-compatible endpoint)")
    key = config.chat_api_key or config.embedding_api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": config.chat_model, "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "ltm_notes", "schema": SCHEMA, "strict": False}}}
    url = config.chat_base_url.rstrip("/") + "/chat/completions"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=config.embedding_timeout)
    except httpx.HTTPError as exc:
        raise ChatError(f"chat model {config.chat_model} at {config.chat_base_url}: {exc}") from exc
    if response.status_code >= 400:
        raise ChatError(f"chat model {config.chat_model} answered HTTP {response.status_code}: "
                        f"{response.text.strip()[:200]}")
    try:
        content = response.json()["choices"][0]["message"]["content"]
        return json.loads(content)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ChatError(f"chat model {config.chat_model} did not answer with JSON: {exc}") from None


def _validate(answer: Any, turn_ids: set[int], note_ids: set[int], model: str) -> list[Proposal]:
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(answer))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise ChatError(f"chat model {model} answered outside the schema, nothing written: "
                        f"{where + ': ' if where else ''}{error.message}")
    proposals = []
    for item in answer["proposals"]:
        if item["action"] == "none":
            continue
        sources = item.get("source_message_ids") or sorted(turn_ids)
        unknown = sorted(set(sources) - turn_ids)
        if unknown:
            raise ChatError(f"chat model {model} cited message {unknown[0]}, which it was not given; nothing written")
        if item["action"] == "supersede" and item["note_id"] not in note_ids:
            raise ChatError(f"chat model {model} proposed to supersede note {item['note_id']}, which it was not "
                            f"shown as live; nothing written")
        proposals.append(Proposal(item["action"], item.get("text"), item.get("about"), item.get("tags") or [],
                                  item.get("note_id"), sources))
    return proposals


def distill(memory: Memory, *, conversation: str | None = None, since: dt.datetime | None = None,
            dry_run: bool = False, limit: int | None = None) -> DistillSummary:
    """Send undistilled turns, with the live notes they may touch, to the chat model; apply what it proposes."""
    from ltm_cli.services.notes import check_about, check_text

    config = memory.config
    summary = DistillSummary(dry_run=dry_run, model=config.chat_model)
    turns = memory.history.list(conversation=conversation, since=since, limit=None, undistilled=True)
    if limit:
        turns = turns[:limit]
    summary.turns = len(turns)
    if not turns:
        return summary
    system = prompt_text(config)
    batches: list[tuple[list[Any], list[Proposal]]] = []
    for start in range(0, len(turns), TURNS_PER_REQUEST):
        batch = turns[start:start + TURNS_PER_REQUEST]
        query = " ".join(t.content for t in batch if t.content)[:2000] or "notes"
        live = memory.search(query, kind="notes", limit=LIVE_NOTES, mode="hybrid")
        user = json.dumps({
            "turns": [{"id": t.id, "conversation": t.conversation_id, "role": t.role, "name": t.name,
                       "content": t.content, "tool_name": t.tool_name, "tool_args": t.tool_args,
                       "tool_result": t.tool_result, "outcome": t.outcome, "outcome_note": t.outcome_note}
                      for t in batch],
            "live_notes": [{"id": h.id, "about": h.about, "text": h.text} for h in live]}, ensure_ascii=False,
            default=str)
        summary.requests += 1
        proposals = _validate(chat_json(config, system, user), {t.id for t in batch}, {h.id for h in live},
                              config.chat_model or "")
        for proposal in proposals:  # the same checks the notes service makes, before anything is written
            try:
                check_text(proposal.text or "")
                check_about(proposal.about)
            except InvalidInputError as exc:
                raise ChatError(f"chat model {config.chat_model} proposed an invalid note, nothing written: "
                                f"{exc.message}") from None
        batches.append((batch, proposals))
    for batch, proposals in batches:
        summary.proposals.extend(proposals)
        if dry_run:
            continue
        author = f"distill:{config.chat_model}"
        for p in proposals:
            if p.action == "add":
                done = memory.notes.add(p.text, about=p.about, tags=p.tags, sources=p.sources, by=author)
                p.applied = f"added note {done.note.id}" if done.created else f"already note {done.note.id}"
            else:
                old, new = memory.notes.supersede(p.note_id, p.text, by=author, sources=p.sources)
                p.applied = f"superseded note {old.id} by note {new.id}"
        memory.history.mark_distilled([t.id for t in batch])
    return summary
