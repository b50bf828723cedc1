"""Conversation memory: messages with their tools and outcomes, embedded as they are added."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.conversations import NewConversation, NewMessage, Problem, check_message, check_outcome, embed_text
from ltm_cli.errors import ConflictError, InvalidInputError, NotFoundError
from ltm_cli.services.embedding import Progress, content_hash, embed_and_cache, no_progress, space_of
from ltm_cli.services.filters import message_filters, time_filters
from ltm_cli.storage import vectors
from ltm_cli.storage.copy import copy_in, encode_rows
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

ANALYZE_ROWS = 1000  # refresh planner statistics after importing this many messages
_COLUMNS = ("conversation_id", "store_id", "seq", "role", "name", "content", "tool_name", "tool_args",
            "tool_result", "outcome", "outcome_note", "metadata", "embed_hash", "token_count", "created_at")
_KINDS = ("uuid", "int4", "int4", "text", "text", "text", "text", "jsonb", "text", "text", "text", "jsonb", "bytea",
          "int4", "timestamptz")


@dataclass(frozen=True)
class MessageInfo:
    id: int
    conversation_id: str
    seq: int
    role: str
    name: str | None
    content: str
    tool_name: str | None
    tool_args: Any
    tool_result: str | None
    outcome: str | None
    outcome_note: str | None
    metadata: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    title: str | None
    messages: int
    metadata: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class Added:
    message_id: int
    conversation_id: str
    seq: int
    new_conversation: bool


@dataclass
class ImportResult:
    conversation_id: str
    line: int
    status: str  # added, appended, unchanged, conflict
    messages: int = 0
    error: str | None = None


@dataclass
class ImportSummary:
    conversations: list[ImportResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    messages: int = 0
    embedded: int = 0

    def count(self, status: str) -> int:
        return sum(1 for c in self.conversations if c.status == status)


# -- conversations -------------------------------------------------------------------------------------
_DISPLAY_ID = "coalesce(c.external_id, c.id::text)"
_CONVERSATIONS = (f"SELECT {_DISPLAY_ID} AS id, c.title, (SELECT count(*) FROM messages m "
                  "WHERE m.conversation_id = c.id) AS messages, c.metadata, c.created_at, c.updated_at "
                  "FROM conversations c")
# the fields a stored message is matched and embedded by (see NewMessage.fingerprint and embed_text)
_STORED_TEXT = "m.role, m.name, m.content, m.tool_name, m.tool_args, m.tool_result"
_MESSAGE_COLUMNS = (f"m.id, {_DISPLAY_ID} AS conversation_id, m.seq, m.role, m.name, m.content, m.tool_name, "
                    "m.tool_args, m.tool_result, m.outcome, m.outcome_note, m.metadata, m.created_at")


def _as_uuid(ref: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


def check_ref(ref: str | None) -> str | None:
    """A conversation id as given: None stays None (no filter, or --new); a blank one is refused, never read as
    "every conversation" by a filter or stored as an id no one can type."""
    if ref is not None and not ref.strip():
        raise InvalidInputError("empty conversation id",
                                hint="give an id (`ltm history conversations` lists them), or leave --conversation out")
    return ref


def _find(conn: Connection | Any, sid: int, ref: str) -> uuid.UUID | None:
    """A conversation by the id ltm gave it or by the id it was imported or created with; `conn`: either kind
    (search runs on a plain cursor, see engine.fetch)."""
    from ltm_cli.storage.engine import fetch

    as_uuid = _as_uuid(ref)
    rows = []
    if as_uuid is not None:
        rows = fetch(conn, "SELECT id::text FROM conversations WHERE store_id = %(s)s AND id = CAST(%(i)s AS uuid)",
                     {"s": sid, "i": str(as_uuid)})
    if not rows:
        rows = fetch(conn, "SELECT id::text FROM conversations WHERE store_id = %(s)s AND external_id = %(e)s",
                     {"s": sid, "e": ref})
    return uuid.UUID(rows[0][0]) if rows else None


def _create(conn: Connection, sid: int, ref: str | None, title: str | None = None,
            metadata: dict[str, Any] | None = None) -> tuple[uuid.UUID, bool]:
    """Make a conversation (or find the one a concurrent writer just made with the same id)."""
    from sqlalchemy import text

    # Our own id is always fresh (a uuid named in another store must not collide); the caller's id, if any, is
    # kept as external_id and is what the conversation is shown and found by.
    new_id, external = uuid.uuid4(), ref
    made = conn.execute(text(
        "INSERT INTO conversations (id, store_id, external_id, title, metadata) "
        "VALUES (:i, :s, :e, :t, CAST(:m AS jsonb)) ON CONFLICT DO NOTHING RETURNING id"),
        {"i": new_id, "s": sid, "e": external, "t": title,
         "m": json.dumps(metadata or {}, ensure_ascii=False)}).scalar()
    if made is not None:
        return made, True
    found = _find(conn, sid, ref) if ref else None
    if found is None:  # pragma: no cover - only if a uuid collides across stores
        raise ConflictError(f"conversation id {ref!r} is taken")
    return found, False


def _display_id(conn: Connection, conversation: uuid.UUID) -> str:
    from sqlalchemy import text

    return conn.execute(text("SELECT coalesce(external_id, id::text) FROM conversations WHERE id = :i"),
                        {"i": conversation}).scalar_one()


def _stored(row: Any) -> NewMessage:
    """A row of _STORED_TEXT as the message it was made from."""
    return NewMessage(row.role, row.content, row.name, row.tool_name, row.tool_args, row.tool_result)


def _touch(conn: Connection, conversation: uuid.UUID) -> None:
    """A conversation spans its messages' times (imports bring old ones): prune and list go by these."""
    from sqlalchemy import text

    conn.execute(text("UPDATE conversations c SET created_at = t.first, updated_at = t.last FROM "
                      "(SELECT min(created_at) AS first, max(created_at) AS last FROM messages "
                      "WHERE conversation_id = :i) t WHERE c.id = :i"), {"i": conversation})


def _embed(db: Database, embedder: Embedder, texts: Sequence[str],
           progress: Progress | None = None) -> tuple[list[bytes], int]:
    """Vectors for these texts in the embedder's space; returns their hashes and how many were computed now."""
    hashes = [content_hash(t) for t in texts]
    space = space_of(db, embedder)
    done = embed_and_cache(db, embedder, space, dict(zip(hashes, texts, strict=True)), progress=progress)
    with db.connect() as conn:  # also rebuilds an index a killed bulk ingest left dropped
        vectors.ensure_index(conn, space, embedder.dim)
    return hashes, done.computed


def _token_counts(texts: Sequence[str]) -> list[int]:
    from ltm_cli.embedders.base import count_tokens

    return count_tokens(texts)


def _rows(cid: uuid.UUID, sid: int, first_seq: int, messages: Sequence[NewMessage], hashes: Sequence[bytes],
          counts: Sequence[int], now: dt.datetime) -> list[tuple]:
    return [(cid, sid, first_seq + i, m.role, m.name, m.content, m.tool_name, m.tool_args, m.tool_result,
             m.outcome, m.outcome_note, m.metadata, h, n, m.created_at or now)
            for i, (m, h, n) in enumerate(zip(messages, hashes, counts, strict=True))]


# -- add / outcome ---------------------------------------------------------------------------------------
def add(db: Database, embedder: Embedder, store: StoreRef, message: NewMessage, *, conversation: str | None = None,
        new: bool = False, title: str | None = None) -> Added:
    """Append one message; it is embedded before this returns, so search sees it at once."""
    with db.writing():
        return _add(db, embedder, store, message, conversation=conversation, new=new, title=title)


def _add(db: Database, embedder: Embedder, store: StoreRef, message: NewMessage, *, conversation: str | None,
         new: bool, title: str | None) -> Added:
    from sqlalchemy import text

    check_ref(conversation)
    if new == (conversation is not None):
        raise InvalidInputError("give either --conversation ID or --new",
                                hint="--new starts a conversation and prints its id")
    message = check_message(message)
    body = embed_text(message)
    hashes, _ = _embed(db, embedder, [body])
    with db.connect() as conn:
        sid = store.id(conn, create=True)
        existing = None if new else _find(conn, sid, conversation)
        created = False
        if existing is None:
            existing, created = _create(conn, sid, conversation, title)
        # The row lock orders concurrent writers to one conversation: seq stays contiguous.
        conn.execute(text("SELECT 1 FROM conversations WHERE id = :i FOR UPDATE"), {"i": existing})
        seq = conn.execute(text("SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE conversation_id = :i"),
                           {"i": existing}).scalar_one()
        row = dict(zip(_COLUMNS, _rows(existing, sid, seq, [message], hashes, _token_counts([body]),
                                       dt.datetime.now(dt.UTC))[0], strict=True))
        if message.created_at is None:
            row["created_at"] = conn.execute(text("SELECT now()")).scalar_one()
        row["tool_args"] = json.dumps(row["tool_args"], ensure_ascii=False) if row["tool_args"] is not None \
            else None
        row["metadata"] = json.dumps(row["metadata"], ensure_ascii=False)
        message_id = conn.execute(text(
            f"INSERT INTO messages ({', '.join(_COLUMNS)}) VALUES (:conversation_id, :store_id, :seq, :role, :name, "
            ":content, :tool_name, CAST(:tool_args AS jsonb), :tool_result, :outcome, :outcome_note, "
            "CAST(:metadata AS jsonb), :embed_hash, :token_count, :created_at) RETURNING id"), row).scalar_one()
        _touch(conn, existing)
        return Added(message_id, _display_id(conn, existing), seq, created)


def set_outcome(db: Database, store: StoreRef, message_id: int, outcome: str, note: str | None = None) -> MessageInfo:
    from sqlalchemy import text

    value = check_outcome(outcome)
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        updated = conn.execute(text(
            "UPDATE messages SET outcome = :o, outcome_note = coalesce(:n, outcome_note) "
            "WHERE id = :i AND store_id = :s RETURNING id"), {"o": value, "n": note, "i": message_id, "s": sid}
        ).scalar() if sid is not None else None
        if updated is None:
            raise NotFoundError(f"no message {message_id} in store {store.name!r}")
        return _messages(conn, "m.id = :i", {"i": message_id})[0]


# -- import ----------------------------------------------------------------------------------------------
def import_conversations(db: Database, embedder: Embedder, store: StoreRef, conversations: Sequence[NewConversation],
                         problems: Sequence[Problem] = (),
                         progress: Progress | None = None) -> ImportSummary:
    """Each conversation in its own transaction. Idempotent: one already stored is left alone, one that grew
    since (the stored messages are a prefix of the file's) gets the new messages appended."""
    with db.writing():
        return _import(db, embedder, store, conversations, problems, progress)


def _import(db: Database, embedder: Embedder, store: StoreRef, conversations: Sequence[NewConversation],
            problems: Sequence[Problem], progress: Progress | None) -> ImportSummary:
    from sqlalchemy import text

    summary = ImportSummary(problems=list(problems))
    tick = progress or no_progress
    for conv in conversations:
        key = conv.key()
        bodies = [embed_text(m) for m in conv.messages]
        with db.connect() as conn:
            sid = store.id(conn, create=True)
            found = _find(conn, sid, key)
            stored = [] if found is None else conn.execute(text(
                f"SELECT {_STORED_TEXT} FROM messages m WHERE m.conversation_id = :i ORDER BY m.seq"),
                {"i": found}).all()
        fingerprints = [_stored(r).fingerprint() for r in stored]
        wanted = [m.fingerprint() for m in conv.messages]
        result = ImportResult(key, conv.line, "added")
        if stored:
            if wanted[:len(fingerprints)] != fingerprints:
                result.status = "conflict"
                result.error = "differs from the stored conversation with this id (rm it first to replace it)"
                summary.conversations.append(result)
                tick("conversation", {"messages": 0})
                continue
            if len(wanted) == len(fingerprints):
                result.status = "unchanged"
                summary.conversations.append(result)
                tick("conversation", {"messages": 0})
                continue
            result.status = "appended"
        todo = conv.messages[len(stored):]
        todo_bodies = bodies[len(stored):]
        hashes, embedded = _embed(db, embedder, todo_bodies, tick)
        summary.embedded += embedded
        counts = _token_counts(todo_bodies)
        with db.connect() as conn:
            sid = store.id(conn, create=True)
            cid = _find(conn, sid, key)
            if cid is None:
                cid, _ = _create(conn, sid, key, conv.title, conv.metadata)
            conn.execute(text("SELECT 1 FROM conversations WHERE id = :i FOR UPDATE"), {"i": cid})
            first = conn.execute(text("SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE conversation_id = :i"),
                                 {"i": cid}).scalar_one()
            if first != len(stored) + 1:
                raise ConflictError(f"conversation {key} changed during the import; run it again")
            now = conn.execute(text("SELECT now()")).scalar_one()
            rows = _rows(cid, sid, first, todo, hashes, counts, now)
            copy_in(conn, "messages", _COLUMNS, encode_rows(rows, _KINDS))
            _touch(conn, cid)
            result.conversation_id = _display_id(conn, cid)
        result.messages = len(todo)
        summary.messages += len(todo)
        summary.conversations.append(result)
        tick("conversation", {"messages": len(todo)})
    if summary.messages >= ANALYZE_ROWS:
        db.analyze("messages", "conversations", "embeddings")
    return summary


def embed_missing(db: Database, embedder: Embedder, store: StoreRef) -> int:
    """Embed every message of the store that has no vector in the embedder's space (after switching models)."""
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return 0
        space = vectors.ensure_space(conn, embedder.provider, embedder.model, embedder.dim)
        rows = conn.execute(text(
            f"SELECT {_STORED_TEXT} FROM messages m WHERE m.store_id = :s AND NOT EXISTS "
            "(SELECT 1 FROM embeddings e WHERE e.space_id = :sp AND e.content_hash = m.embed_hash)"),
            {"s": sid, "sp": space}).all()
    bodies = [embed_text(_stored(r)) for r in rows]
    with db.writing():
        return _embed(db, embedder, bodies)[1]


# -- reading -----------------------------------------------------------------------------------------------
def _messages(conn: Connection, where: str, params: dict[str, Any], order: str = "m.created_at, m.seq",
              limit: int | None = None) -> list[MessageInfo]:
    from sqlalchemy import text

    sql = (f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id "
           f"WHERE {where} ORDER BY {order}")
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [MessageInfo(**row) for row in conn.execute(text(sql), params).mappings()]


def list_messages(db: Database, store: StoreRef, *, conversation: str | None = None, since: dt.datetime | None = None,
                  until: dt.datetime | None = None, role: str | None = None, outcome: str | None = None,
                  limit: int | None = 50, undistilled: bool = False) -> list[MessageInfo]:
    """The most recent messages matching the filters, returned oldest first (`undistilled`: only turns that
    `ltm history distill` has not read yet)."""
    check_ref(conversation)
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return []
        where, params = ["m.store_id = :s"], {"s": sid}
        if undistilled:
            where.append("m.distilled_at IS NULL")
        message_filters(conn, sid, "m", where, params, conversation=conversation, role=role, outcome=outcome,
                        since=since, until=until, store=store)
        rows = _messages(conn, " AND ".join(where), params, "m.created_at DESC, m.seq DESC", limit)
    return rows[::-1]


def mark_distilled(db: Database, store: StoreRef, message_ids: Sequence[int]) -> int:
    from sqlalchemy import text

    with db.connect() as conn:
        return conn.execute(text("UPDATE messages SET distilled_at = now() WHERE id = ANY(:ids) AND store_id = :s "
                                 "AND distilled_at IS NULL"),
                            {"ids": list(message_ids), "s": store.id(conn, create=False)}).rowcount


def list_conversations(db: Database, store: StoreRef, *, since: dt.datetime | None = None,
                       limit: int | None = 50) -> list[ConversationInfo]:
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return []
        where, params = ["c.store_id = :s"], {"s": sid}
        time_filters(where, params, "c.updated_at", since, None)
        sql = f"{_CONVERSATIONS} WHERE {' AND '.join(where)} ORDER BY c.updated_at DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [ConversationInfo(**r) for r in conn.execute(text(sql), params).mappings()]


def show(db: Database, store: StoreRef, conversation: str) -> tuple[ConversationInfo, list[MessageInfo]]:
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        cid = _find(conn, sid, conversation) if sid is not None else None
        if cid is None:
            raise NotFoundError(f"no conversation {conversation!r} in store {store.name!r}")
        info = conn.execute(text(f"{_CONVERSATIONS} WHERE c.id = :i"), {"i": cid}).mappings().one()
        return ConversationInfo(**info), _messages(conn, "m.conversation_id = :c", {"c": cid}, "m.seq")


def neighbours(db: Database, message_ids: Sequence[int], context: int) -> dict[int, list[MessageInfo]]:
    """For each message, the turns around it (up to `context` before and after), itself included."""
    if context < 1 or not message_ids:
        return {}
    with db.connect() as conn:
        rows = _messages(conn, "EXISTS (SELECT 1 FROM messages h WHERE h.id = ANY(:ids) AND "
                               "h.conversation_id = m.conversation_id AND m.seq BETWEEN h.seq - :n AND h.seq + :n)",
                         {"ids": list(message_ids), "n": context}, "m.conversation_id, m.seq")
    by_conversation: dict[str, list[MessageInfo]] = {}
    for row in rows:
        by_conversation.setdefault(row.conversation_id, []).append(row)
    out: dict[int, list[MessageInfo]] = {}
    wanted = set(message_ids)
    for turns in by_conversation.values():
        for turn in turns:
            if turn.id in wanted:
                out[turn.id] = [t for t in turns if abs(t.seq - turn.seq) <= context]
    return out


def export(db: Database, store: StoreRef, conversation: str | None = None) -> list[dict[str, Any]]:
    """Conversations in the OpenAI chat format plus ltm's fields: `import` reads them back unchanged.

    One transaction, so the export is a consistent snapshot even while others write."""
    from sqlalchemy import text

    from ltm_cli.conversations import to_openai

    check_ref(conversation)
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if conversation:
            cid = _find(conn, sid, conversation) if sid is not None else None
            if cid is None:
                raise NotFoundError(f"no conversation {conversation!r} in store {store.name!r}")
            where, params = "c.id = :c", {"c": cid}
        elif sid is None:
            return []
        else:
            where, params = "c.store_id = :s", {"s": sid}
        infos = [ConversationInfo(**r) for r in conn.execute(
            text(f"{_CONVERSATIONS} WHERE {where} ORDER BY c.updated_at"), params).mappings()]
        messages: dict[str, list[MessageInfo]] = {}
        for m in _messages(conn, where, params, "c.updated_at, m.conversation_id, m.seq"):
            messages.setdefault(m.conversation_id, []).append(m)
    return [to_openai({"id": info.id, "title": info.title, "metadata": info.metadata},
                      [m.__dict__ for m in messages.get(info.id, [])]) for info in infos]


# -- deleting ----------------------------------------------------------------------------------------------
def remove(db: Database, store: StoreRef, conversations: Sequence[str]) -> list[str]:
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        ids = []
        for ref in conversations:
            cid = _find(conn, sid, ref) if sid is not None else None
            if cid is None:
                raise NotFoundError(f"no conversation {ref!r} in store {store.name!r}")
            ids.append(cid)
        return list(conn.execute(text(f"DELETE FROM conversations c WHERE c.id = ANY(:ids) RETURNING {_DISPLAY_ID}"),
                                 {"ids": ids}).scalars())


def prune(db: Database, store: StoreRef, before: dt.datetime, *, dry_run: bool = False) -> list[ConversationInfo]:
    """Delete whole conversations whose last message is older than `before` (never half a conversation)."""
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return []
        rows = [ConversationInfo(**r) for r in conn.execute(text(
            f"{_CONVERSATIONS} WHERE c.store_id = :s AND c.updated_at < :b ORDER BY c.updated_at"),
            {"s": sid, "b": before}).mappings()]
        if not dry_run and rows:
            conn.execute(text("DELETE FROM conversations WHERE store_id = :s AND updated_at < :b"),
                         {"s": sid, "b": before})
        return rows
