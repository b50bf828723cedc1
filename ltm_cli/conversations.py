"""Conversation files: OpenAI chat JSON / JSONL and plain `role: text` transcripts, in and out.

Pure parsing and formatting, no database: the history service stores what this returns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from ltm_cli.errors import InvalidInputError
from ltm_cli.services.settings import check_value
from ltm_cli.storage.names import OUTCOMES, ROLES

ROLE_ALIASES = {"human": "user", "ai": "assistant", "bot": "assistant", "developer": "system",
                "function": "tool"}
_TRANSCRIPT_LINE = re.compile(r"^(?P<role>[A-Za-z]+)(?:\s*\((?P<name>[^)]{1,64})\))?\s*:\s?(?P<text>.*)$")


@dataclass
class NewMessage:
    role: str
    content: str = ""
    name: str | None = None
    tool_name: str | None = None
    tool_args: Any = None
    tool_result: str | None = None
    outcome: str | None = None
    outcome_note: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: dt.datetime | None = None

    def fingerprint(self) -> str:
        """What makes two messages "the same" for idempotent imports (outcomes may change later)."""
        return json.dumps([self.role, self.name, self.content, self.tool_name, self.tool_args, self.tool_result],
                          ensure_ascii=False, sort_keys=True)


@dataclass
class NewConversation:
    messages: list[NewMessage]
    external_id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int = 1  # where it starts in its file, for messages

    def key(self) -> str:
        """Its stable id: the one the file gives, else a hash of its content (so re-imports match)."""
        if self.external_id:
            return self.external_id
        digest = hashlib.sha256("\n".join(m.fingerprint() for m in self.messages).encode()).hexdigest()
        return f"import:{digest[:32]}"


@dataclass
class Problem:
    line: int
    message: str


def embed_text(message: NewMessage | Any) -> str:
    """What a message is searched by: the speaker, the text, and any tool call with its result."""
    speaker = message.name or message.role
    parts = [f"{speaker}: {message.content}".rstrip()]
    if message.tool_name:
        args = json.dumps(message.tool_args, ensure_ascii=False) if message.tool_args is not None else ""
        parts.append(f"[tool {message.tool_name}{'(' + args + ')' if args else ''}]")
    if message.tool_result:
        parts.append(f"[result] {message.tool_result}")
    return "\n".join(parts)


# -- validation shared with `ltm history add` ------------------------------------------------------------
def check_role(role: str) -> str:
    value = ROLE_ALIASES.get(role.strip().lower(), role.strip().lower())
    if value not in ROLES:
        raise InvalidInputError(f"unknown role {role!r}", hint=f"use one of: {', '.join(ROLES)}")
    return value


def check_outcome(outcome: str | None) -> str | None:
    if outcome is None:
        return None
    value = outcome.strip().lower()
    if value not in OUTCOMES:
        raise InvalidInputError(f"unknown outcome {outcome!r}", hint=f"use one of: {', '.join(OUTCOMES)}")
    return value


def check_message(message: NewMessage) -> NewMessage:
    message.role = check_role(message.role)
    message.outcome = check_outcome(message.outcome)
    for label, value in (("content", message.content), ("name", message.name), ("tool name", message.tool_name),
                         ("tool result", message.tool_result), ("note", message.outcome_note),
                         ("tool arguments", message.tool_args), ("metadata", message.metadata)):
        if value is not None:
            check_value(value, label)
    if message.created_at is not None and message.created_at.tzinfo is None:
        message.created_at = message.created_at.replace(tzinfo=dt.UTC)
    return message


def parse_timestamp(value: Any) -> dt.datetime | None:
    """ISO 8601 text or Unix seconds; naive times are UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidInputError(f"invalid timestamp {value!r}")
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"invalid timestamp {value!r}", hint="use ISO 8601") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    raise InvalidInputError(f"invalid timestamp {value!r}")


# -- OpenAI chat format ----------------------------------------------------------------------------------
def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and part.get("type") not in (None, "text"):
                texts.append(f"[{part['type']}]")
        return "\n".join(texts)
    raise InvalidInputError(f"message content must be text or a list of parts, not {type(content).__name__}")


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise InvalidInputError("tool call arguments are not valid JSON") from None
    return raw


def message_from_openai(obj: Any, tool_names: dict[str, str]) -> NewMessage:
    if not isinstance(obj, dict):
        raise InvalidInputError("a message must be a JSON object")
    if "role" not in obj:
        raise InvalidInputError("a message has no role")
    extra = {k: obj[k] for k in ("tool_calls", "tool_call_id") if obj.get(k) is not None}
    message = NewMessage(role=str(obj["role"]), content=_content_text(obj.get("content")),
                         name=obj.get("name") or None, outcome=obj.get("outcome"),
                         outcome_note=obj.get("outcome_note"),
                         metadata=dict(obj.get("metadata") or {}),
                         created_at=parse_timestamp(obj.get("created_at", obj.get("timestamp"))))
    if extra:
        message.metadata["_openai"] = extra
    calls = obj.get("tool_calls") or []
    if calls:
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise InvalidInputError("tool_calls must be a list of objects")
        function = calls[0].get("function") or {}
        message.tool_name = function.get("name")
        message.tool_args = _arguments(function.get("arguments"))
        for call in calls:
            if call.get("id") and (call.get("function") or {}).get("name"):
                tool_names[call["id"]] = call["function"]["name"]
    if obj.get("tool_call_id"):
        message.tool_name = tool_names.get(obj["tool_call_id"], message.tool_name)
    if obj.get("tool_name"):  # ltm's own fields, as `ltm history export` writes them
        message.tool_name = obj["tool_name"]
    if "tool_args" in obj:
        message.tool_args = obj["tool_args"]
    if obj.get("tool_result") is not None:
        message.tool_result = str(obj["tool_result"])
    return check_message(message)


def conversation_from_openai(obj: Any, line: int = 1) -> NewConversation:
    if isinstance(obj, list):
        obj = {"messages": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        raise InvalidInputError('expected an object with a "messages" list')
    tool_names: dict[str, str] = {}
    messages = []
    for index, raw in enumerate(obj["messages"], start=1):
        try:
            messages.append(message_from_openai(raw, tool_names))
        except InvalidInputError as exc:
            raise InvalidInputError(f"message {index}: {exc.message}") from None
    if not messages:
        raise InvalidInputError("the conversation has no messages")
    external = obj.get("id", obj.get("conversation_id"))
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InvalidInputError("metadata must be an object")
    check_value(metadata, "metadata")
    return NewConversation(messages, str(external) if external not in (None, "") else None,
                           obj.get("title"), metadata, line)


def to_openai(conversation: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """One conversation as `ltm history export` writes it: OpenAI chat format plus ltm's own fields."""
    out_messages = []
    for m in messages:
        meta = dict(m.get("metadata") or {})
        openai_extra = meta.pop("_openai", {})
        item: dict[str, Any] = {"role": m["role"], "content": m["content"]}
        if m.get("name"):
            item["name"] = m["name"]
        item.update(openai_extra)
        for key in ("tool_name", "tool_args", "tool_result", "outcome", "outcome_note"):
            if m.get(key) is not None:
                item[key] = m[key]
        if meta:
            item["metadata"] = meta
        item["created_at"] = m["created_at"].isoformat() if isinstance(m["created_at"], dt.datetime) \
            else m["created_at"]
        out_messages.append(item)
    out = {"id": conversation["id"], "messages": out_messages}
    if conversation.get("title"):
        out["title"] = conversation["title"]
    if conversation.get("metadata"):
        out["metadata"] = conversation["metadata"]
    return out


# -- files ---------------------------------------------------------------------------------------------
def parse(text: str, name: str = "input") -> tuple[list[NewConversation], list[Problem]]:
    """Any supported file: JSON (one conversation, or a list of them), JSONL (one per line), or a transcript."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise InvalidInputError(f"{name} is empty")
    if stripped[0] in "[{":
        try:
            whole = json.loads(stripped)
        except json.JSONDecodeError:
            whole = None
            if stripped[0] == "[":
                raise InvalidInputError(f"{name} is not valid JSON") from None
        if whole is not None:
            return _parse_json(whole)
        return _parse_jsonl(text)
    return _parse_transcript(text)


def _parse_json(whole: Any) -> tuple[list[NewConversation], list[Problem]]:
    if isinstance(whole, dict):
        return [conversation_from_openai(whole)], []
    # a list: of conversations, or of messages (one conversation)
    if whole and all(isinstance(x, dict) and "role" in x for x in whole):
        return [conversation_from_openai(whole)], []
    conversations, problems = [], []
    for index, item in enumerate(whole, start=1):
        try:
            conversations.append(conversation_from_openai(item, index))
        except InvalidInputError as exc:
            problems.append(Problem(index, f"conversation {index}: {exc.message}"))
    return conversations, problems


def _parse_jsonl(text: str) -> tuple[list[NewConversation], list[Problem]]:
    conversations, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(number, f"not valid JSON ({exc.msg})"))
            continue
        try:
            conversations.append(conversation_from_openai(obj, number))
        except InvalidInputError as exc:
            problems.append(Problem(number, exc.message))
    return conversations, problems


def _parse_transcript(text: str) -> tuple[list[NewConversation], list[Problem]]:
    """`role: text` lines, one conversation; lines without a role continue the message before them."""
    messages: list[NewMessage] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _TRANSCRIPT_LINE.match(line)
        role = None
        if match:
            word = match["role"].lower()
            role = ROLE_ALIASES.get(word, word)
        if match and role in ROLES:
            messages.append(NewMessage(role=role, content=match["text"], name=match["name"]))
        elif messages:
            messages[-1].content += "\n" + line
        elif line.strip():
            problems.append(Problem(number, "text before the first 'role: text' line"))
    for message in messages:
        message.content = message.content.rstrip("\n")
        try:
            check_message(message)
        except InvalidInputError as exc:
            problems.append(Problem(1, exc.message))
            return [], problems
    return ([NewConversation(messages)] if messages else []), problems
