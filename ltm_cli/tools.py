"""The tools an LLM uses on its memory: names, descriptions and JSON schemas written for a model to choose and
fill, and what each does through `Memory`. One source of truth for the MCP server, `ltm tools` (OpenAI and
Anthropic function-calling formats) and `ltm tools call`."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError, LtmError, NotFoundError
from ltm_cli.render import to_jsonable
from ltm_cli.services.filters import FILTER_KINDS
from ltm_cli.storage.names import OUTCOMES, ROLES

if TYPE_CHECKING:
    from ltm_cli.memory import Memory
    from ltm_cli.services.search import Hit

FORMATS = ("openai", "anthropic", "mcp")
MAX_TOOL_LIMIT = 50  # results a tool call returns at most: an LLM's context is the scarce thing
# Characters a result gives one thing at most, for the same reason; what is cut says how much and where to read it.
TEXT_CHARS = 4000  # a hit's text: a document chunk (~1,000) whole, a pasted log or a long note cut
CONTEXT_CHARS = 1000  # each of content, tool arguments and result of a turn shown around a hit
VALUE_CHARS = 1000  # a setting's value (as JSON) echoed by settings_set, _revert, _list and _history
GET_CHARS = 100_000  # settings_get returns a longer value only when asked with whole: true
QUOTE_CHARS = 200  # of an offending value quoted in an error
ERROR_CHARS = 1000  # a whole error message
MAX_ID = 2**63 - 1  # PostgreSQL bigint: a larger id is not found rather than an overflow


@dataclass(frozen=True)
class Caller:
    """Who calls a tool: the client's name (recorded as `by` on settings changes) and, for docs_ingest, the
    directories it may read (resolved; empty means docs_ingest is not offered)."""

    name: str = "ltm tools call"
    allowed_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ToolResult:
    data: dict[str, Any]  # structured content: a JSON object
    text: str  # the same, readable


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[Memory, dict[str, Any], Caller], ToolResult]
    read_only: bool
    destructive: bool = False
    needs_paths: bool = False
    title: str = ""

    def definition(self, fmt: str) -> dict[str, Any]:
        if fmt == "openai":
            return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                     "parameters": self.parameters}}
        if fmt == "anthropic":
            return {"name": self.name, "description": self.description, "input_schema": self.parameters}
        return {"name": self.name, "title": self.title, "description": self.description,
                "inputSchema": self.parameters, "annotations": self.annotations()}

    def annotations(self) -> dict[str, Any]:
        return {"title": self.title, "readOnlyHint": self.read_only, "destructiveHint": self.destructive,
                "idempotentHint": self.read_only, "openWorldHint": False}


# -- schema pieces ---------------------------------------------------------------------------------------
def _obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _str(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _name(description: str, max_length: int = 1000, **extra: Any) -> dict[str, Any]:
    """A string that must say something (minLength 1, and not only spaces: see validate): blank, it would be
    stored as junk or read as "no filter"; a model that means no filter leaves the field out."""
    return _str(description, minLength=1, maxLength=max_length, **extra)


def _names(description: str) -> dict[str, Any]:
    return {"type": "array", "items": _name("A tag."), "maxItems": 100, "description": description}


def _id(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": MAX_ID, "description": description}


def _ids(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "description": description}


def _int(description: str, default: int, low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "description": description, "default": default, "minimum": low, "maximum": high}


KEY = _name("Dotted setting key, e.g. voice.speed or prompts.system.", 256)
NOTE = _name("Why: the user's request or your reason, kept in the history.", 20000)
TIME = "ISO 8601 date or date-time (2026-11-25, 2026-11-25T14:30Z), or a period back from now (2h, 7d, 6m, 1y)."
OUTCOME = _str("How the action turned out.", enum=list(OUTCOMES))
ABOUT = 200  # characters of a subject key, as the notes service allows
FILTERS = {
    "source": _name("Only documents whose source path matches this glob, e.g. *stripe*.", 4096),
    "tags": _names("Only documents (or notes) with all these tags."),
    "since": _name(f"Only documents updated / turns said at or after this time: {TIME}", 100),
    "until": _name(f"... and before this time: {TIME}", 100),
    "role": _str("Only turns of this role.", enum=list(ROLES)),
    "outcome": _str("Only turns with this outcome (failure: what went wrong before).", enum=list(OUTCOMES)),
    "conversation": _name("Only turns of this conversation id."),
    "about": _name("Only notes about this subject (and below it), e.g. user or project.billing.", ABOUT),
    "include_toc": {"type": "boolean", "default": False,
                    "description": "Rank contents and index pages like body text (normally last)."},
}
MODE = _str("hybrid (keywords and meaning, best in general), keyword (exact terms, names, error codes) or "
            "vector (meaning only).", enum=["hybrid", "keyword", "vector"], default="hybrid")


# -- results as structured data and as text ------------------------------------------------------------------
def _cut(text: str | None, limit: int, whole: str) -> str | None:
    """`text` up to `limit` characters; beyond, how many were left out and where to read them (`whole`)."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters cut; {whole}]"


def _quote(value: Any) -> str:
    """repr(value), its start only when long: an error names the value, it does not echo a page of it."""
    text = repr(value)
    if len(text) <= QUOTE_CHARS:
        return text
    size = f"{len(value):,} {'characters' if isinstance(value, str) else 'items'}" \
        if isinstance(value, str | list | dict) else f"{len(text):,} characters"
    return f"{text[:QUOTE_CHARS]}… ({size})"


def _value(value: Any, whole: str) -> dict[str, Any]:
    """A setting's value as a result echoes it: whole when short, else its size, its start and how to get it."""
    text = json.dumps(to_jsonable(value), ensure_ascii=False)
    if len(text) <= VALUE_CHARS:
        return {"value": value}
    return {"value_chars": len(text), "value_start": text[:QUOTE_CHARS] + "…",
            "value_not_shown": f"{len(text):,} characters as JSON; {whole}"}


def _version(v: Any) -> dict[str, Any]:
    at = to_jsonable(v.created_at)
    value = {"value": None} if v.deleted else \
        _value(v.value, f"settings_get with key {v.key} and at {at} returns it (with whole: true if over "
                        f"{GET_CHARS:,})")
    return {"key": v.key, "version": v.version, **value, "deleted": v.deleted, "note": v.note, "by": v.author,
            "at": at}


def _json_result(data: dict[str, Any]) -> ToolResult:
    data = to_jsonable(data)
    return ToolResult(data, json.dumps(data, ensure_ascii=False, indent=1))


def _where_whole(hit: Hit, seq: int | None = None) -> str:
    """Where to read a cut hit (or the turn `seq` around it) whole."""
    if hit.kind == "docs":
        return f"the whole document: ltm docs show {hit.document_id} --chunks, or resource ltm://documents/" \
               f"{hit.document_id}"
    if hit.kind == "notes":
        return f"the whole note: ltm note show {hit.id}"
    return (f"the whole turn: history_show with conversation {hit.conversation_id} and seq {seq or hit.seq} "
            f"(ltm history show {shlex.quote(hit.conversation_id or '')})")


TURN_FIELDS = ("id", "seq", "role", "name", "content", "tool_name", "tool_args", "tool_result", "outcome",
               "outcome_note")


def _turn(turn: dict[str, Any], hit: Hit) -> dict[str, Any]:
    """A turn around a history hit, each of its texts cut to CONTEXT_CHARS (the hit's own turn to TEXT_CHARS)."""
    limit = TEXT_CHARS if turn["id"] == hit.id else CONTEXT_CHARS
    return _cut_turn({k: turn[k] for k in TURN_FIELDS}, limit, _where_whole(hit, turn["seq"]))


def _cut_turn(data: dict[str, Any], limit: int, whole: str) -> dict[str, Any]:
    """A turn's texts (content, tool arguments and result, outcome note) cut to `limit`, saying where the whole is."""
    data["content"] = _cut(data["content"], limit, whole)
    data["tool_result"] = _cut(data["tool_result"], limit, whole)
    if data["tool_args"] is not None:
        args = json.dumps(data["tool_args"], ensure_ascii=False)
        if len(args) > limit:  # cut, the arguments are JSON text rather than the object
            data["tool_args"] = _cut(args, limit, whole)
    data["outcome_note"] = _cut(data["outcome_note"], limit, whole)
    return data


def hit_data(hit: Hit) -> dict[str, Any]:
    """A hit as an LLM needs it: where it came from (to cite), the passage (cut at TEXT_CHARS, saying where to read
    the rest), and for turns how it went and the turns around it."""
    from ltm_cli.services.search import citation

    data: dict[str, Any] = {"rank": hit.rank, "kind": hit.kind, "id": hit.id, "score": round(hit.score, 4)}
    if hit.kind == "notes":
        data |= {"citation": f"note {hit.id}" + (f" about {hit.about}" if hit.about else ""), "about": hit.about,
                 "source_messages": hit.source_messages, "source_documents": hit.source_documents,
                 "at": hit.created_at, "closed": hit.valid_until is not None}
    elif hit.kind == "docs":
        where = citation(hit.location)
        data |= {"citation": f"{hit.title or Path(hit.source or '').name}{' — ' + where if where else ''}",
                 "source": hit.source, "document_id": hit.document_id, "location": hit.location}
    else:
        data |= {"citation": f"conversation {hit.conversation_id} turn {hit.seq}",
                 "conversation_id": hit.conversation_id, "seq": hit.seq, "role": hit.role, "name": hit.name,
                 "tool_name": hit.tool_name, "outcome": hit.outcome, "outcome_note": hit.outcome_note,
                 "at": hit.created_at}
    if hit.kind == "history":
        data["outcome_note"] = _cut(hit.outcome_note, TEXT_CHARS, _where_whole(hit))
    data["text"] = _cut(hit.text, TEXT_CHARS, _where_whole(hit))
    if hit.context:
        data["context"] = [_turn(t, hit) for t in hit.context]
    return to_jsonable(data)


def _hits_result(query: str, hits: list[Hit]) -> ToolResult:
    items = [hit_data(h) for h in hits]
    warnings = list(getattr(hits, "warnings", ()))
    lines = [f"{len(items)} result(s) for {query!r}" if items else f"no stored memory matches {query!r}"]
    lines += [f"warning: {w}" for w in warnings]
    for item in items:
        extra = ""
        if item["kind"] == "history" and item.get("outcome"):
            extra = f" (outcome: {item['outcome']}{' — ' + item['outcome_note'] if item.get('outcome_note') else ''})"
        lines.append(f"\n[{item['rank']}] {item['citation']}{extra}")
        if item.get("source"):
            lines.append(f"source: {item['source']}")
        if item.get("context"):
            for turn in item["context"]:
                said = " ".join(str(turn["content"] or "").split())
                if turn.get("tool_name"):
                    args = turn["tool_args"]
                    said += f" → {turn['tool_name']}" \
                            f"({args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)})"
                if turn.get("tool_result"):
                    said += f" ← {' '.join(str(turn['tool_result']).split())[:300]}"
                if turn.get("outcome"):
                    said += f" [outcome: {turn['outcome']}]"
                lines.append(f"  #{turn['seq']} {turn['name'] or turn['role']}: {said}")
        else:
            lines.append(item["text"])
    data: dict[str, Any] = {"query": query, "hits": items}
    if warnings:
        data["warnings"] = warnings
    return ToolResult(data, "\n".join(lines))


def _search_args(args: dict[str, Any]) -> dict[str, Any]:
    names = ("source", "since", "until", "role", "outcome", "conversation", "about")
    return {name: args.get(name) for name in names} | {
        "tags": args.get("tags") or (), "mode": args.get("mode", "hybrid"),
        "include_toc": args.get("include_toc", False)}


# -- the tools ---------------------------------------------------------------------------------------------
def _settings_get(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    value = m.settings.get(a["key"], at=a.get("at"))
    # Reading a value is this tool's job, so it is never cut; but one pasted by mistake (a log, a file) would
    # fill the model's context on an innocent look-up, so past GET_CHARS the model must ask for it knowingly.
    size = len(json.dumps(to_jsonable(value), ensure_ascii=False))
    if size > GET_CHARS and not a.get("whole"):
        raise InvalidInputError(f"{a['key']} holds {size:,} characters (as JSON), more than settings_get returns "
                                f"unasked ({GET_CHARS:,})", hint="call settings_get again with whole: true to get "
                                                                 "it all")
    return _json_result({"key": a["key"], "value": value})


def _set_result(r: Any) -> ToolResult:
    whole = f"settings_get with key {r.key} returns it (with whole: true if over {GET_CHARS:,})"
    return _json_result({"key": r.key, **_value(r.value, whole), "version": r.version, "changed": r.changed})


def _settings_set(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    from ltm_cli.services.settings import check_value

    r = m.settings.set(a["key"], check_value(a["value"]), note=a.get("note"), by=c.name, force=a.get("force", False))
    return _set_result(r)


def _settings_list(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    return _json_result({"settings": [_version(v) for v in m.settings.list(a.get("prefix"))]})


def _settings_history(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    return _json_result({"versions": [_version(v) for v in m.settings.history(a.get("key"))]})


def _settings_revert(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    r = m.settings.revert(a["key"], to=a.get("to_version"), at=a.get("at"), note=a.get("note"), by=c.name,
                          force=a.get("force", False))
    return _set_result(r)




def _search_kind(args: dict[str, Any]) -> str:
    """The kind memory_search searches: the one asked for, else the one the filters imply (outcome → history,
    about → notes), else docs. Filters that fit no kind, or not the one asked for, are an error that says so."""
    given = [name for name in FILTER_KINDS if args.get(name)]
    kinds = {"docs", "history", "notes"}
    for name in given:
        kinds &= set(FILTER_KINDS[name])
    kind = args.get("kind")
    if kind in (None, "all") and not kinds:
        named = ", ".join(f"{name} ({' or '.join(FILTER_KINDS[name])})" for name in given)
        raise InvalidInputError(f"these filters belong to different kinds of memory: {named}",
                                hint="search one kind at a time, with only its filters")
    if kind is None:
        return "docs" if "docs" in kinds else kinds.pop()
    for name in given:
        if kind != "all" and kind not in FILTER_KINDS[name]:
            fits = FILTER_KINDS[name]
            raise InvalidInputError(f"{name} filters {' and '.join(fits)}, not {kind}",
                                    hint=f"set kind to {fits[0]}, or leave kind out")
    return kind


def _memory_search(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    hits = m.search(a["query"], kind=_search_kind(a), limit=a.get("limit", 5), **_search_args(a))
    return _hits_result(a["query"], hits)


def _memory_recall(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    r = m.recall(a["query"], budget=a.get("budget", 1500), kind=a.get("kind", "all"),
                 include_toc=a.get("include_toc", False))
    passages = [{"number": p.number, "kind": p.kind, "citation": p.citation, "source": p.source,
                 "conversation_id": p.conversation_id} for p in r.passages]
    data = {"query": r.query, "tokens": r.tokens, "budget": r.budget, "passages": passages, "markdown": r.markdown}
    if r.warnings:
        data["warnings"] = r.warnings
    text = "\n".join([r.markdown, *(f"warning: {w}" for w in r.warnings)])
    return ToolResult(to_jsonable(data), text)


def _log_turn(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    content = a.get("content") or ""
    if not any(_says(a.get(k)) for k in ("content", "tool_name", "arguments", "result")):
        # An empty turn (and, without a conversation, an empty new conversation) is junk in every later search.
        raise InvalidInputError("nothing to record: the turn has no content and no tool call",
                                hint="give content, or tool_name with the call's arguments and result")
    conversation = a.get("conversation")
    added = m.history.add(content if content.strip() else "", role=a["role"], conversation=conversation,
                          new=conversation is None, title=a.get("title"), name=a.get("name"),
                          tool=a.get("tool_name"), args=a.get("arguments"), result=_as_text(a.get("result")),
                          outcome=a.get("outcome"), note=a.get("note"))
    return _json_result({"message_id": added.message_id, "conversation": added.conversation_id, "seq": added.seq,
                         "new_conversation": added.new_conversation})


def _says(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _as_text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _record_outcome(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    msg = m.history.outcome(a["message_id"], a["outcome"], a.get("note"))
    return _json_result({"message_id": msg.id, "conversation": msg.conversation_id, "seq": msg.seq,
                         "outcome": msg.outcome, "note": msg.outcome_note})


def _history_search(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    hits = m.history.search(a["query"], mode=a.get("mode", "hybrid"), limit=a.get("limit", 5),
                            conversation=a.get("conversation"), role=a.get("role"), outcome=a.get("outcome"),
                            since=a.get("since"), until=a.get("until"), context=a.get("context", 1))
    return _hits_result(a["query"], hits)


SHOW_TURNS = 20  # turns history_show returns without a seq: the most recent ones


def _history_show(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    """One turn whole (with `seq`: what a cut hit points to), else the conversation's latest turns, each cut."""
    info, messages = m.history.show(a["conversation"])
    if a.get("seq") is not None:
        turns = [t for t in messages if t.seq == a["seq"]]
        if not turns:
            raise NotFoundError(f"conversation {info.id} has no turn {a['seq']} (it has {len(messages)})")
        limit = None
    else:
        turns, limit = messages[-SHOW_TURNS:], TEXT_CHARS
    shown = []
    for t in turns:
        data = {k: getattr(t, k) for k in TURN_FIELDS}
        if limit is not None:
            data = _cut_turn(data, limit, f"history_show with conversation {info.id} and seq {t.seq} returns it "
                                          f"whole")
        shown.append({**data, "at": to_jsonable(t.created_at)})
    return _json_result({"conversation": info.id, "title": info.title, "turns_in_conversation": len(messages),
                         "turns": shown})


def _docs_list(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    docs = m.docs.list(tag=a.get("tag"), source=a.get("source"), limit=a.get("limit", 50))
    return _json_result({"documents": [{"id": d.id, "title": d.title, "source": d.source, "type": d.media_type,
                                        "chunks": d.chunks, "tags": d.tags, "updated_at": d.updated_at}
                                       for d in docs]})


def _note(n: Any) -> dict[str, Any]:
    return {"id": n.id, "text": _cut(n.text, TEXT_CHARS, f"the whole note: ltm note show {n.id}"), "about": n.about,
            "tags": n.tags, "source_messages": n.source_messages, "source_documents": n.source_documents,
            "by": n.author, "since": n.created_at, "until": n.valid_until, "superseded_by": n.superseded_by,
            "closed_reason": n.closed_reason}


def _remember(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    r = m.notes.add(a["text"], about=a.get("about"), tags=a.get("tags") or (), sources=a.get("source_messages") or (),
                    documents=a.get("source_documents") or (), by=c.name, force=a.get("force", False))
    data = _json_result({"note": _note(r.note), "created": r.created,
                         "similar": [{"note": _note(s.note), "similarity": s.similarity} for s in r.similar]}).data
    lines = [f"remembered as note {r.note.id}" if r.created else
             f"already remembered as note {r.note.id}: {data['note']['text']}"]
    for similar in data["similar"]:
        if similar["note"]["id"] != r.note.id:
            lines.append(f"similar live note {similar['note']['id']} ({similar['similarity']:.2f}): "
                         f"{similar['note']['text']}")
    if len(lines) > 1:
        lines.append("If the new fact contradicts one of these, call supersede_note on it instead.")
    return ToolResult(data, "\n".join(lines))


def _supersede_note(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    old, new = m.notes.supersede(a["note_id"], a["text"], by=c.name, sources=a.get("source_messages") or ())
    return _json_result({"old": _note(old), "new": _note(new)})


def _forget_note(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    return _json_result({"note": _note(m.notes.forget(a["note_id"], a["reason"]))})


def confine(paths: list[str], roots: tuple[Path, ...]) -> list[str]:
    """Each path resolved (symlinks followed, `..` folded; relative ones against the first root) and required
    to lie inside one of `roots`: an LLM may read only what the person running the server allowed."""
    if not roots:
        raise InvalidInputError("docs_ingest is disabled: start the server with --allow-path DIR")
    resolved = []
    for raw in paths:
        if not raw.strip():  # Path("") is ".": the whole first root, which no one asked for
            raise InvalidInputError("empty path", hint="name a file or directory; '.' is the first allowed one")
        path = Path(raw).expanduser()
        real = (path if path.is_absolute() else roots[0] / path).resolve()
        if not any(real == root or real.is_relative_to(root) for root in roots):
            raise InvalidInputError(f"{raw} is outside the allowed directories",
                                    hint="allowed: " + ", ".join(str(r) for r in roots))
        resolved.append(str(real))
    return resolved


def _docs_ingest(m: Memory, a: dict[str, Any], c: Caller) -> ToolResult:
    paths = confine(list(a["paths"]), c.allowed_paths)
    summary = m.docs.ingest(paths, tags=a.get("tags") or (), confine_to=c.allowed_paths)
    data = {status: summary.count(status) for status in ("added", "updated", "unchanged", "skipped", "failed")}
    data |= {"chunks": summary.chunks,
             "documents": [{"source": f.source, "status": f.status, "chunks": f.chunks, "error": f.error}
                           for f in summary.files]}
    return _json_result(data)


TOOLS: tuple[Tool, ...] = (
    Tool("settings_get", "Read the active value of one of your settings (a dotted key such as voice.speed), or a "
         "whole group as an object. Use `at` to see the value at a past time. Fails if the key was never set. "
         f"A value longer than {GET_CHARS:,} characters comes back only with whole: true.",
         _obj({"key": KEY, "at": _name(f"Optional: the value active at this time, {TIME}", 100),
               "whole": {"type": "boolean", "default": False,
                         "description": f"Return the value even when longer than {GET_CHARS:,} characters."}},
              ("key",)),
         _settings_get, read_only=True, title="Read a setting"),
    Tool("settings_set", "Change one of your settings when the user asks you to (e.g. speak faster: voice.speed "
         "= 1.2; a new persona: personality.tone). Every change is kept with your note, and can be reverted. "
         "Setting the value it already has records nothing.",
         _obj({"key": KEY, "value": {"description": "The new value: any JSON value (number, string, boolean, "
                                                    "array, object or null)."},
               "note": NOTE, "force": {"type": "boolean", "default": False,
                                       "description": "Record a new version even if the value is unchanged."}},
              ("key", "value")),
         _settings_set, read_only=False, title="Change a setting"),
    Tool("settings_list", "List your active settings with their values, versions and who changed them last.",
         _obj({"prefix": _name("Only this key and the keys below it, e.g. voice.", 256)}),
         _settings_list, read_only=True, title="List settings"),
    Tool("settings_history", "Every change ever made to a setting (or to all settings): time, value, note, who. "
         "Use it to see what a setting was before or why it changed.",
         _obj({"key": _name("A key or group; all settings when omitted.", 256)}),
         _settings_history, read_only=True, title="Settings history"),
    Tool("settings_revert", "Undo a change to a setting: bring back the previous value (default), a given version, "
         "or the value active at a time. The revert is itself recorded as a new version; when the setting holds "
         "that value already, nothing is recorded (changed: false).",
         _obj({"key": KEY, "to_version": _id("The version to bring back."),
               "at": _name(f"Bring back the value active at this time, {TIME}", 100), "note": NOTE,
               "force": {"type": "boolean", "default": False,
                         "description": "Record a new version even if the value is unchanged."}}, ("key",)),
         _settings_revert, read_only=False, title="Revert a setting"),
    Tool("memory_search", "Search stored reference documents (manuals, product docs, API specifications), past "
         "conversations and/or remembered facts. Returns passages with citations (file, page, heading or METHOD "
         "/path). Use it before answering from documentation or calling an API whose specification was stored. "
         "Without `kind` it searches what the filters given belong to: past conversations with role, outcome "
         "or conversation, notes with about, else documents.",
         _obj({"query": _str("What to look for, in natural language or keywords.", minLength=1),
               "kind": _str("docs (reference documents), history (past conversations), notes (remembered "
                            "facts) or all. Omitted: history with role, outcome or conversation, notes with "
                            "about, else docs.", enum=["docs", "history", "notes", "all"]),
               "mode": MODE, "limit": _int("How many results.", 5, 1, MAX_TOOL_LIMIT), **FILTERS}, ("query",)),
         _memory_search, read_only=True, title="Search memory"),
    Tool("memory_recall", "Get one Markdown block of the memory most relevant to a question, within a token "
         "budget: the best document passages and past turns, numbered for citation. Call it before answering "
         "a question that stored documents or earlier conversations may answer.",
         _obj({"query": _str("The question you are about to answer or the task you are about to do.",
                             minLength=1),
               "budget": _int("Most tokens the block may take.", 1500, 50, 20000),
               "kind": _str("all, docs, history or notes.", enum=["all", "docs", "history", "notes"],
                            default="all"),
               "include_toc": FILTERS["include_toc"]},
              ("query",)),
         _memory_recall, read_only=True, title="Recall context"),
    Tool("log_turn", "Record one turn of the conversation in long-term memory: what the user asked, what you "
         "answered, or a tool call you made with its arguments and result, and how it turned out. Omit "
         "`conversation` to start a new conversation; its id comes back and the next turns should use it.",
         _obj({"conversation": _name("Conversation id (made on first use). Omit to start a new one."),
               "role": _str("Who spoke.", enum=list(ROLES)),
               "content": _str("What was said (may be empty for a pure tool call; a turn needs content or "
                               "tool_name)."),
               "name": _name("The speaker's name, if any."),
               "title": _name("Title of a conversation this turn starts."),
               "tool_name": _name("The tool this turn called."),
               "arguments": {"description": "The tool call's arguments (a JSON value)."},
               "result": {"description": "What the tool returned (text or JSON)."},
               "outcome": OUTCOME, "note": _name("Why it worked or failed.", 20000)}, ("role",)),
         _log_turn, read_only=False, title="Log a turn"),
    Tool("record_outcome", "Record how the action of an earlier turn turned out, once you know (success, failure, "
         "partial, unknown), with a note on why. Later, history_search with outcome=failure finds what went "
         "wrong before.",
         _obj({"message_id": _id("The message id log_turn returned."),
               "outcome": OUTCOME, "note": _name("Why it worked or failed.", 20000)}, ("message_id", "outcome")),
         _record_outcome, read_only=False, title="Record an outcome"),
    Tool("history_search", "Search past conversations: what was asked, what you did, which tools you called and "
         "how each turned out. With outcome=failure it answers \"what went wrong last time I did X\"; each hit "
         "comes with the turns around it.",
         _obj({"query": _str("What to look for.", minLength=1), "mode": MODE,
               "limit": _int("How many results.", 5, 1, MAX_TOOL_LIMIT),
               "context": _int("Turns shown before and after each hit.", 1, 0, 10),
               **{k: FILTERS[k] for k in ("outcome", "role", "conversation", "since", "until")}}, ("query",)),
         _history_search, read_only=True, title="Search history"),
    Tool("history_show", "Read a past conversation: one turn whole (give its seq, e.g. to read a hit that "
         f"history_search cut), else its latest {SHOW_TURNS} turns, each cut at {TEXT_CHARS:,} characters.",
         _obj({"conversation": _name("The conversation id (history_search and log_turn give it)."),
               "seq": {"type": "integer", "minimum": 1, "description": "The turn to read whole."}},
              ("conversation",)),
         _history_show, read_only=True, title="Read a conversation"),
    Tool("remember", "Remember a durable fact or lesson for later conversations: a user preference (\"the user "
         "prefers metric units\"), how something works here, what went wrong and why. Give it a subject (`about`) "
         "and the message ids it came from. If the same fact is already remembered, that note comes back instead; "
         "similar notes about the subject are listed so you can supersede one that is now wrong.",
         _obj({"text": _str("The fact, in one or two plain sentences.", minLength=1, maxLength=20000),
               "about": _name("Subject key, e.g. user, user.preferences, project.billing, api.v2.", ABOUT),
               "tags": _names("Tags."),
               "source_messages": _ids("Ids of the messages (log_turn) this fact was drawn from."),
               "source_documents": _ids("Ids of documents it was drawn from."),
               "force": {"type": "boolean", "default": False, "description": "Add even if already remembered."}},
              ("text",)),
         _remember, read_only=False, title="Remember a fact"),
    Tool("supersede_note", "Replace a remembered fact that is no longer true with what is true now. The old note "
         "is kept as history (valid until now) and points at the new one.",
         _obj({"note_id": _id("The note that is no longer true."),
               "text": _str("What is true now.", minLength=1, maxLength=20000),
               "source_messages": _ids("Ids of the messages that showed the change.")},
              ("note_id", "text")),
         _supersede_note, read_only=False, title="Supersede a note"),
    Tool("forget_note", "Stop believing a remembered fact (wrong, or the user asked you to forget it). It is closed "
         "with your reason, not deleted.",
         _obj({"note_id": _id("The note to forget."), "reason": _name("Why.", 20000)},
              ("note_id", "reason")),
         _forget_note, read_only=False, destructive=True, title="Forget a note"),
    Tool("docs_list", "List the reference documents stored in memory (id, title, source, type, chunks, tags).",
         _obj({"tag": _name("Only documents with this tag."),
               "source": _name("Only sources matching this glob.", 4096),
               "limit": _int("At most this many.", 50, 1, 1000)}),
         _docs_list, read_only=True, title="List documents"),
    Tool("docs_ingest", "Add files or directories (PDF, Markdown, OpenAPI JSON/YAML, text) to reference memory so "
         "that memory_search finds them. Only paths inside the directories the server allows; unchanged files "
         "are skipped.",
         _obj({"paths": {"type": "array", "items": _name("A file or directory ('.': the first allowed one).", 4096),
                         "minItems": 1, "maxItems": 100,
                         "description": "Files or directories, absolute or relative to the first allowed "
                                        "directory."},
               "tags": _names("Tags for the documents.")},
              ("paths",)),
         _docs_ingest, read_only=False, needs_paths=True, title="Ingest documents"),
)
BY_NAME = {tool.name: tool for tool in TOOLS}


def available(*, read_only: bool = False, allow_paths: bool = False) -> list[Tool]:
    """The tools a server offers: writing ones only when not read-only, docs_ingest only with allowed paths."""
    return [t for t in TOOLS if (t.read_only or not read_only) and (allow_paths or not t.needs_paths)]


def definitions(fmt: str = "openai", *, read_only: bool = False, allow_paths: bool = False) -> list[dict[str, Any]]:
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    return [t.definition(fmt) for t in available(read_only=read_only, allow_paths=allow_paths)]


def validate(tool: Tool, args: Any) -> dict[str, Any]:
    """Arguments checked against the tool's schema, with defaults filled in; a one-line error otherwise.

    Read the way models write JSON: null for an optional field that cannot be null is the field left out, and a
    whole-number float (2.0, which JSON Schema counts as an integer) becomes the int the handlers expect. A
    string the schema wants non-empty must also be more than spaces."""
    import jsonschema

    if args is None:
        args = {}
    args = _without_nulls(tool.parameters, args)
    validator = jsonschema.Draft202012Validator(tool.parameters)
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    if error is not None:
        message = error.message
        if len(repr(error.instance)) > QUOTE_CHARS:
            message = message.replace(repr(error.instance), _quote(error.instance), 1)
        raise _argument_error(tool, error.absolute_path, message)
    args = _normalised(tool, tool.parameters, args, ())
    defaults = {k: v["default"] for k, v in tool.parameters["properties"].items() if "default" in v}
    return defaults | args


def _argument_error(tool: Tool, path: Any, message: str) -> InvalidInputError:
    where = "/".join(str(p) for p in path)
    return InvalidInputError(_shortened(f"invalid arguments for {tool.name}: {where + ': ' if where else ''}"
                                        f"{message}"))


def _shortened(message: str) -> str:
    return message if len(message) <= ERROR_CHARS else f"{message[:ERROR_CHARS]}… ({len(message):,} characters)"


def _without_nulls(schema: dict[str, Any], value: Any) -> Any:
    """`value` without the nulls given for optional properties whose schema does not take null."""
    import jsonschema

    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        required = set(schema.get("required", ()))
        out = {}
        for key, item in value.items():
            sub = schema["properties"].get(key)
            if sub is None:
                out[key] = item  # an unknown property: the schema's error names it
            elif item is not None:
                out[key] = _without_nulls(sub, item)
            elif key in required or jsonschema.Draft202012Validator(sub).is_valid(None):
                out[key] = None
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_without_nulls(schema["items"], item) for item in value]
    return value


def _normalised(tool: Tool, schema: dict[str, Any], value: Any, path: tuple[Any, ...]) -> Any:
    """A valid `value` with whole-number floats as ints where the schema says integer; a blank string where
    it says minLength is refused."""
    types = schema.get("type")
    types = types if isinstance(types, list) else [types]
    if isinstance(value, float) and value.is_integer() and "integer" in types:
        return int(value)
    if isinstance(value, str) and schema.get("minLength", 0) >= 1 and not value.strip():
        raise _argument_error(tool, path, "must not be blank (leave the field out instead)")
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        return {k: _normalised(tool, schema["properties"][k], v, (*path, k)) if k in schema["properties"] else v
                for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_normalised(tool, schema["items"], v, (*path, i)) for i, v in enumerate(value)]
    return value


def call(memory: Memory, name: str, args: Any, caller: Caller | None = None, *,
         read_only: bool = False) -> ToolResult:
    """Run one tool. Errors are LtmError subclasses with the CLI's one-line messages."""
    caller = caller or Caller()
    tool = BY_NAME.get(name)
    offered = available(read_only=read_only, allow_paths=bool(caller.allowed_paths))
    if tool is None or tool not in offered:
        known = ", ".join(t.name for t in offered)
        raise NotFoundError(f"no tool {_quote(name)}" + (" here (read-only)" if tool and read_only else ""),
                            hint=f"tools: {known}")
    try:
        return tool.run(memory, validate(tool, args), caller)
    except LtmError as exc:  # a message quoting a huge value would cost the model what the caps above save
        if len(exc.message) > ERROR_CHARS:
            exc.message = _shortened(exc.message)
            exc.args = (exc.message,)
        raise

