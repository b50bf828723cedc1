"""Stores as a whole: list them with their counts, create, rename, copy and remove one."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ltm_cli.errors import ConflictError, InvalidInputError, NotFoundError
from ltm_cli.storage.engine import WRITERS_LOCK
from ltm_cli.storage.stores import validate_store_name

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.storage.engine import Database


@dataclass(frozen=True)
class StoreInfo:
    name: str
    created_at: dt.datetime
    settings: int  # keys, as `ltm db status` counts them
    conversations: int
    messages: int
    documents: int
    chunks: int
    notes: int  # live ones


@dataclass(frozen=True)
class Renamed:
    old: str
    new: str
    replaced: StoreInfo | None  # the store that had the new name, now gone


@dataclass(frozen=True)
class Copied:
    source: str
    target: StoreInfo


@dataclass(frozen=True)
class Removed:
    store: StoreInfo


# What a store holds, per kind, as columns over `stores s` (`ltm store list` and `ltm db status` both show it).
COUNTS = """
      (SELECT count(DISTINCT key) FROM settings t WHERE t.store_id = s.id),
      (SELECT count(*) FROM conversations c WHERE c.store_id = s.id),
      (SELECT count(*) FROM messages m WHERE m.store_id = s.id),
      (SELECT count(*) FROM documents d WHERE d.store_id = s.id),
      (SELECT count(*) FROM chunks k WHERE k.store_id = s.id),
      (SELECT count(*) FROM notes n WHERE n.store_id = s.id AND n.valid_until IS NULL)"""
_INFO = f"SELECT s.name, s.created_at, {COUNTS} FROM stores s"

# Copying a store, table by table. New ids come from each table's own sequence, recorded in temporary maps so
# that the rows pointing at them (messages at conversations, chunks at documents, notes at notes, messages
# and documents) point at the copies. Vectors are shared by content hash: the copies reuse them as they are.
_COPY = (
    "INSERT INTO settings (store_id, key, version, value, deleted, note, author, created_at) "
    "SELECT :dst, key, version, value, deleted, note, author, created_at FROM settings WHERE store_id = :src",
    # A conversation without an external id is shown and found by its uuid; the copy gets a new uuid, so the
    # old one becomes its external id and `-c ID` names the same conversation in both stores.
    "CREATE TEMP TABLE _ltm_conv_map ON COMMIT DROP AS "
    "SELECT id AS old, gen_random_uuid() AS new FROM conversations WHERE store_id = :src",
    "INSERT INTO conversations (id, store_id, title, external_id, metadata, created_at, updated_at) "
    "SELECT m.new, :dst, c.title, coalesce(c.external_id, c.id::text), c.metadata, c.created_at, c.updated_at "
    "FROM conversations c JOIN _ltm_conv_map m ON m.old = c.id",
    "CREATE TEMP TABLE _ltm_msg_map ON COMMIT DROP AS "
    "SELECT id AS old, nextval(pg_get_serial_sequence('messages', 'id')) AS new FROM messages WHERE store_id = :src",
    "INSERT INTO messages (id, conversation_id, store_id, seq, role, name, content, tool_name, tool_args, "
    "tool_result, outcome, outcome_note, metadata, embed_hash, token_count, created_at, distilled_at) "
    "SELECT mm.new, cm.new, :dst, m.seq, m.role, m.name, m.content, m.tool_name, m.tool_args, m.tool_result, "
    "m.outcome, m.outcome_note, m.metadata, m.embed_hash, m.token_count, m.created_at, m.distilled_at "
    "FROM messages m JOIN _ltm_msg_map mm ON mm.old = m.id JOIN _ltm_conv_map cm ON cm.old = m.conversation_id",
    "CREATE TEMP TABLE _ltm_doc_map ON COMMIT DROP AS "
    "SELECT id AS old, nextval(pg_get_serial_sequence('documents', 'id')) AS new FROM documents "
    "WHERE store_id = :src",
    "INSERT INTO documents (id, store_id, source, content_hash, media_type, title, metadata, tags, created_at, "
    "updated_at) SELECT dm.new, :dst, d.source, d.content_hash, d.media_type, d.title, d.metadata, d.tags, "
    "d.created_at, d.updated_at FROM documents d JOIN _ltm_doc_map dm ON dm.old = d.id",
    "INSERT INTO chunks (document_id, store_id, ordinal, heading, text, location, token_count, embed_hash) "
    "SELECT dm.new, :dst, k.ordinal, k.heading, k.text, k.location, k.token_count, k.embed_hash "
    "FROM chunks k JOIN _ltm_doc_map dm ON dm.old = k.document_id",
    "CREATE TEMP TABLE _ltm_note_map ON COMMIT DROP AS "
    "SELECT id AS old, nextval(pg_get_serial_sequence('notes', 'id')) AS new FROM notes WHERE store_id = :src",
    # Source ids outside the store (a message since deleted) are kept as they were: they point at nothing.
    "INSERT INTO notes (id, store_id, text, about, tags, metadata, source_messages, source_documents, author, "
    "created_at, valid_until, superseded_by, closed_reason, embed_hash, token_count) "
    "SELECT nm.new, :dst, n.text, n.about, n.tags, n.metadata, "
    "ARRAY(SELECT coalesce(x.new, u.id) FROM unnest(n.source_messages) WITH ORDINALITY u(id, o) "
    "      LEFT JOIN _ltm_msg_map x ON x.old = u.id ORDER BY u.o)::bigint[], "
    "ARRAY(SELECT coalesce(x.new, u.id) FROM unnest(n.source_documents) WITH ORDINALITY u(id, o) "
    "      LEFT JOIN _ltm_doc_map x ON x.old = u.id ORDER BY u.o)::bigint[], "
    "n.author, n.created_at, n.valid_until, sm.new, n.closed_reason, n.embed_hash, n.token_count "
    "FROM notes n JOIN _ltm_note_map nm ON nm.old = n.id LEFT JOIN _ltm_note_map sm ON sm.old = n.superseded_by",
)


class Stores:
    """Every store in one database. `Memory.stores` returns one; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def list(self) -> list[StoreInfo]:
        """All stores by name, with how many settings keys, conversations, messages, documents, chunks and
        live notes each holds."""
        from sqlalchemy import text

        with self._db.connect() as conn:
            return [StoreInfo(*row) for row in conn.execute(text(f"{_INFO} ORDER BY s.name"))]

    def get(self, name: str) -> StoreInfo:
        with self._db.connect() as conn:
            return _info(conn, validate_store_name(name))

    def create(self, name: str) -> StoreInfo:
        """An empty store (stores are also created by their first write); ConflictError if it exists."""
        from sqlalchemy import text

        validate_store_name(name)
        with self._db.connect() as conn:
            made = conn.execute(text("INSERT INTO stores (name) VALUES (:n) ON CONFLICT (name) DO NOTHING "
                                     "RETURNING id"), {"n": name}).scalar()
            if made is None:
                raise ConflictError(f"store {name!r} already exists")
            return _info(conn, name)

    def rename(self, old: str, new: str, *, replace: bool = False) -> Renamed:
        """Give a store another name, atomically. A store already called `new` is a ConflictError unless
        `replace`, which deletes it (and everything in it) in the same transaction."""
        from sqlalchemy import text

        validate_store_name(old)
        validate_store_name(new)
        if old == new:
            raise InvalidInputError(f"store {old!r} already has that name")
        with self._db.connect() as conn:
            # Both rows locked in name order, so two renames of the same pair cannot deadlock.
            locked = conn.execute(text("SELECT name FROM stores WHERE name IN (:a, :b) ORDER BY name FOR UPDATE"),
                                  {"a": old, "b": new}).scalars().all()
            if old not in locked:
                raise _not_found(old)
            replaced = None
            if new in locked:
                if not replace:
                    raise ConflictError(f"store {new!r} already exists",
                                        hint="remove it first, or rename with --yes to replace it")
                replaced = _info(conn, new)
                conn.execute(text("DELETE FROM stores WHERE name = :n"), {"n": new})
            conn.execute(text("UPDATE stores SET name = :new WHERE name = :old"), {"old": old, "new": new})
            return Renamed(old, new, replaced)

    def copy(self, source: str, target: str) -> Copied:
        """A new store `target` holding a copy of every row of `source`, made in one transaction from one
        snapshot: all settings versions, conversations with their messages (new uuids; the same ids to show
        and find them by, seq, outcomes and times), documents with their chunks, notes with their chains.
        Vectors are shared by content hash, so nothing is embedded again."""
        from sqlalchemy import text

        validate_store_name(source)
        validate_store_name(target)
        with self._db.connect() as conn:
            # One snapshot for every table: a write to the source during the copy is in it entirely or not at all.
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            # `ltm db gc` waits: a vector the source stops using meanwhile must stay for the copy.
            conn.execute(text("SELECT pg_advisory_xact_lock_shared(hashtextextended(:k, 0))"), {"k": WRITERS_LOCK})
            src = conn.execute(text("SELECT id FROM stores WHERE name = :n"), {"n": source}).scalar()
            if src is None:
                raise _not_found(source)
            dst = conn.execute(text("INSERT INTO stores (name, metadata) SELECT :n, metadata FROM stores "
                                    "WHERE id = :src ON CONFLICT (name) DO NOTHING RETURNING id"),
                               {"n": target, "src": src}).scalar()
            if dst is None:
                raise ConflictError(f"store {target!r} already exists", hint="copy to a new name, or remove it first")
            for statement in _COPY:
                conn.execute(text(statement), {"src": src, "dst": dst})
            return Copied(source, _info(conn, target))

    def rm(self, name: str) -> Removed:
        """Delete a store and everything in it. Vectors nothing else uses stay until `ltm db gc`."""
        from sqlalchemy import text

        validate_store_name(name)
        with self._db.connect() as conn:
            info = _info(conn, name)
            conn.execute(text("DELETE FROM stores WHERE name = :n"), {"n": name})
            return Removed(info)


def _info(conn: Connection, name: str) -> StoreInfo:
    from sqlalchemy import text

    row = conn.execute(text(f"{_INFO} WHERE s.name = :n"), {"n": name}).first()
    if row is None:
        raise _not_found(name)
    return StoreInfo(*row)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"no store {name!r}", hint="`ltm store list` shows the stores")
