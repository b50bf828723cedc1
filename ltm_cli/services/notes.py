"""Notes: durable facts and lessons (from conversations, documents or a person), never edited in place.

A note is live until it is superseded (closed, pointing at its successor) or forgotten (closed with a reason);
`--at` shows what was believed at a time; only a purge deletes. Notes are embedded and full-text indexed like
the other kinds, in the store's embedding space, and each keeps the message and document ids it came from."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import ConflictError, InvalidInputError, NotFoundError
from ltm_cli.services.embedding import content_hash, embed_and_cache, space_of
from ltm_cli.storage import vectors
from ltm_cli.storage.stores import StoreRef, lock_store

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.embedders.base import Embedder
    from ltm_cli.storage.engine import Database

NEAR_DUPLICATE = 0.95  # cosine at or above which a new note about the same subject is the same note
SIMILAR = 5  # live notes about the same subject listed with every add
MAX_NOTE_CHARS = 20_000
ABOUT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_COLUMNS = ("n.id, n.text, n.about, n.tags, n.metadata, n.source_messages, n.source_documents, n.author, "
            "n.created_at, n.valid_until, n.superseded_by, n.closed_reason")


@dataclass(frozen=True)
class NoteInfo:
    id: int
    text: str
    about: str | None
    tags: list[str]
    metadata: dict[str, Any]
    source_messages: list[int]
    source_documents: list[int]
    author: str | None
    created_at: dt.datetime
    valid_until: dt.datetime | None
    superseded_by: int | None
    closed_reason: str | None

    @property
    def live(self) -> bool:
        return self.valid_until is None


@dataclass(frozen=True)
class Similar:
    note: NoteInfo
    similarity: float


@dataclass(frozen=True)
class Remembered:
    note: NoteInfo
    created: bool  # False: a near-identical live note about the same subject exists, and is returned instead
    similar: list[Similar] = field(default_factory=list)  # the closest live notes about the same subject


@dataclass(frozen=True)
class Source:
    kind: str  # message or document
    id: int
    text: str | None  # None when it no longer exists
    where: str | None = None  # conversation and turn, or the document's source


@dataclass(frozen=True)
class NoteDetail:
    note: NoteInfo
    replaced: list[NoteInfo]  # the notes this one superseded, newest first
    replaced_by: list[NoteInfo]  # its successors, in order
    sources: list[Source]


# -- checks --------------------------------------------------------------------------------------------------
def check_text(text: str) -> str:
    from ltm_cli.services.settings import check_value

    text = (text or "").strip()
    if not text:
        raise InvalidInputError("a note needs text")
    if len(text) > MAX_NOTE_CHARS:
        raise InvalidInputError(f"a note holds at most {MAX_NOTE_CHARS:,} characters (this one {len(text):,})",
                                hint="notes are short facts; ingest longer text as a document")
    return check_value(text, "note text")


def check_about(about: str | None) -> str | None:
    if about is None or about == "":
        return None
    if len(about) > 200 or not ABOUT.match(about):
        raise InvalidInputError(f"invalid subject {about!r}",
                                hint="a dotted key such as user, project.billing or api.v2")
    return about


def _normal(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".!;")


# -- reading -------------------------------------------------------------------------------------------------
def _info(row: Any) -> NoteInfo:
    data = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    data = {k: data[k] for k in NoteInfo.__dataclass_fields__}
    data["tags"] = list(data["tags"] or [])
    data["source_messages"] = list(data["source_messages"] or [])
    data["source_documents"] = list(data["source_documents"] or [])
    return NoteInfo(**data)


def _get(conn: Connection, sid: int | None, note_id: int, store: StoreRef, *, lock: bool = False) -> NoteInfo:
    from sqlalchemy import text

    row = conn.execute(text(f"SELECT {_COLUMNS} FROM notes n WHERE n.id = :i AND n.store_id = :s"
                            + (" FOR UPDATE" if lock else "")), {"i": note_id, "s": sid}).first() \
        if sid is not None else None
    if row is None:
        raise NotFoundError(f"no note {note_id} in store {store.name!r}")
    return _info(row)


def list_notes(db: Database, store: StoreRef, *, about: str | None = None, tag: str | None = None,
               include_closed: bool = False, at: dt.datetime | None = None,
               limit: int | None = None) -> list[NoteInfo]:
    """Live notes (newest first); `include_closed` adds closed ones; `at` shows those live at that time."""
    from sqlalchemy import text

    where, params = ["n.store_id = :s"], {}
    if about:
        where.append("(n.about = :about OR starts_with(n.about, :about_dot))")
        params.update(about=check_about(about), about_dot=f"{about}.")
    if tag:
        where.append(":tag = ANY(n.tags)")
        params["tag"] = tag
    if at is not None:
        where.append("n.created_at <= :at AND (n.valid_until IS NULL OR n.valid_until > :at)")
        params["at"] = at
    elif not include_closed:
        where.append("n.valid_until IS NULL")
    sql = f"SELECT {_COLUMNS} FROM notes n WHERE {' AND '.join(where)} ORDER BY n.created_at DESC, n.id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return []
        return [_info(r) for r in conn.execute(text(sql), {"s": sid, **params})]


def show(db: Database, store: StoreRef, note_id: int) -> NoteDetail:
    """A note with its chain (what it replaced, what replaced it) and its sources with their text."""
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        note = _get(conn, sid, note_id, store)
        replaced, current = [], note.id
        while True:  # walk back: the note whose successor is `current`
            row = conn.execute(text(f"SELECT {_COLUMNS} FROM notes n WHERE n.superseded_by = :i"),
                               {"i": current}).first()
            if row is None or len(replaced) > 1000:
                break
            replaced.append(_info(row))
            current = replaced[-1].id
        replaced_by, after = [], note.superseded_by
        while after is not None and len(replaced_by) <= 1000:
            successor = _get(conn, sid, after, store)
            replaced_by.append(successor)
            after = successor.superseded_by
        sources = _sources(conn, sid, note)
    return NoteDetail(note, replaced, replaced_by, sources)


def _sources(conn: Connection, sid: int, note: NoteInfo) -> list[Source]:
    from sqlalchemy import text

    found = {r.id: r for r in conn.execute(text(
        "SELECT m.id, m.content, m.role, m.tool_name, m.tool_result, m.seq, "
        "coalesce(c.external_id, c.id::text) AS conversation FROM messages m "
        "JOIN conversations c ON c.id = m.conversation_id WHERE m.id = ANY(:ids) AND m.store_id = :s"),
        {"ids": note.source_messages, "s": sid})}
    out = []
    for mid in note.source_messages:
        row = found.get(mid)
        if row is None:
            out.append(Source("message", mid, None))
            continue
        said = row.content or ""
        if row.tool_name:
            said += f" [tool {row.tool_name}]" + (f" → {row.tool_result}" if row.tool_result else "")
        out.append(Source("message", mid, said.strip(), f"conversation {row.conversation} turn {row.seq}"))
    docs = {r.id: r for r in conn.execute(text(
        "SELECT d.id, d.source, d.title FROM documents d WHERE d.id = ANY(:ids) AND d.store_id = :s"),
        {"ids": note.source_documents, "s": sid})}
    for did in note.source_documents:
        row = docs.get(did)
        out.append(Source("document", did, row.title if row else None, row.source if row else None))
    return out


# -- writing -------------------------------------------------------------------------------------------------
def _check_sources(conn: Connection, sid: int, messages: Sequence[int], documents: Sequence[int]) -> None:
    from sqlalchemy import text

    for table, ids, label in (("messages", messages, "message"), ("documents", documents, "document")):
        if not ids:
            continue
        present = set(conn.execute(text(f"SELECT id FROM {table} WHERE id = ANY(:ids) AND store_id = :s"),
                                   {"ids": list(ids), "s": sid}).scalars())
        missing = sorted(set(ids) - present)
        if missing:
            raise NotFoundError(f"no {label} {missing[0]} in this store (a note's source must exist)")


def _similar(conn: Connection, sid: int, space: int, dim: int, about: str | None, vector: Any,
             limit: int = SIMILAR) -> list[Similar]:
    from sqlalchemy import text

    rows = conn.execute(text(
        f"SELECT {_COLUMNS}, 1 - (e.embedding::halfvec({int(dim)}) <=> CAST(:q AS halfvec({int(dim)}))) AS sim "
        f"FROM notes n JOIN embeddings e ON e.space_id = {int(space)} AND e.content_hash = n.embed_hash "
        "WHERE n.store_id = :s AND n.valid_until IS NULL AND n.about IS NOT DISTINCT FROM CAST(:about AS text) "
        "ORDER BY sim DESC, n.id LIMIT :k"),
        {"s": sid, "about": about, "q": vectors.vector_literal(vector), "k": limit}).all()
    return [Similar(_info(r), round(float(r.sim), 4)) for r in rows]


def _embed(db: Database, embedder: Embedder, body: str) -> tuple[int, bytes, Any]:
    """The note's vector, cached before the note is written (as for chunks and messages)."""
    from sqlalchemy import text

    digest = content_hash(body)
    space = space_of(db, embedder)
    embed_and_cache(db, embedder, space, {digest: body})
    with db.connect() as conn:
        vectors.ensure_index(conn, space, embedder.dim)
        raw = conn.execute(text("SELECT embedding::text FROM embeddings WHERE space_id = :sp AND content_hash = :h"),
                           {"sp": space, "h": digest}).scalar_one()
    import numpy as np

    return space, digest, np.array(raw.strip("[]").split(","), dtype=np.float32)


def embed_body(text: str, about: str | None) -> str:
    """What a note is searched by: its subject gives it context, as a heading does a chunk."""
    return f"{about}: {text}" if about else text


def _insert(conn: Connection, sid: int, text_: str, about: str | None, tags: Sequence[str],
            metadata: dict[str, Any], messages: Sequence[int], documents: Sequence[int], author: str | None,
            digest: bytes) -> NoteInfo:
    from sqlalchemy import text

    from ltm_cli.embedders.base import count_tokens

    row = conn.execute(text(f"""
        INSERT INTO notes AS n (store_id, text, about, tags, metadata, source_messages, source_documents, author,
                                embed_hash, token_count)
        VALUES (:s, :t, :a, :tags, CAST(:m AS jsonb), :msgs, :docs, :by, :h, :n)
        RETURNING {_COLUMNS}"""), {"s": sid, "t": text_, "a": about, "tags": list(tags),
                                   "m": json.dumps(metadata, ensure_ascii=False), "msgs": list(messages),
                                   "docs": list(documents), "by": author, "h": digest,
                                   "n": count_tokens([embed_body(text_, about)])[0]}).first()
    return _info(row)


def add(db: Database, embedder: Embedder, store: StoreRef, text: str, *, about: str | None = None,
        tags: Sequence[str] = (), metadata: dict[str, Any] | None = None, messages: Sequence[int] = (),
        documents: Sequence[int] = (), author: str | None = None, force: bool = False) -> Remembered:
    """Remember a fact. A live note about the same subject that says the same (same words, or cosine at or
    above NEAR_DUPLICATE) is returned instead unless `force`; the closest live notes about the subject come
    back either way, so the caller can decide whether the new note contradicts one and should supersede it."""
    from ltm_cli.services.settings import check_value

    text, about = check_text(text), check_about(about)
    check_value(metadata or {}, "metadata")
    with db.writing():
        space, digest, vector = _embed(db, embedder, embed_body(text, about))
        with db.connect() as conn:
            sid = store.id(conn, create=True)
            lock_store(conn, sid, f"notes:{about or ''}")  # two processes adding one fact: one note
            _check_sources(conn, sid, messages, documents)
            similar = _similar(conn, sid, space, embedder.dim, about, vector)
            if not force:
                for candidate in similar:
                    if candidate.similarity >= NEAR_DUPLICATE or _normal(candidate.note.text) == _normal(text):
                        return Remembered(candidate.note, False, similar)
            note = _insert(conn, sid, text, about, tags, metadata or {}, messages, documents, author, digest)
    return Remembered(note, True, [s for s in similar if s.note.id != note.id])


def supersede(db: Database, embedder: Embedder, store: StoreRef, note_id: int, text: str, *,
              author: str | None = None, about: str | None = None, tags: Sequence[str] | None = None,
              messages: Sequence[int] = (), documents: Sequence[int] = ()) -> tuple[NoteInfo, NoteInfo]:
    """Close a live note (valid until now, superseded by the new one) and open its successor, in one
    transaction. The successor keeps the subject and tags unless given, and its sources are the new ones plus
    the old note's (why it is believed includes what it replaced)."""
    from sqlalchemy import text as sql

    text = check_text(text)
    with db.writing():
        with db.connect() as conn:
            old = _get(conn, store.id(conn, create=False), note_id, store)
        about = check_about(about) if about is not None else old.about
        space, digest, _ = _embed(db, embedder, embed_body(text, about))
        with db.connect() as conn:
            sid = store.id(conn, create=True)
            lock_store(conn, sid, f"notes:{about or ''}")
            old = _get(conn, sid, note_id, store, lock=True)
            if not old.live:
                raise ConflictError(f"note {note_id} is already closed ({old.closed_reason})",
                                    hint=f"supersede note {old.superseded_by} instead" if old.superseded_by else None)
            _check_sources(conn, sid, messages, documents)
            new = _insert(conn, sid, text, about, old.tags if tags is None else tags, old.metadata,
                          list(dict.fromkeys([*messages, *old.source_messages])),
                          list(dict.fromkeys([*documents, *old.source_documents])), author, digest)
            conn.execute(sql("UPDATE notes SET valid_until = :t, superseded_by = :n, closed_reason = 'superseded' "
                             "WHERE id = :i"), {"t": new.created_at, "n": new.id, "i": old.id})
            old = _get(conn, sid, note_id, store)
    return old, new


def forget(db: Database, store: StoreRef, note_id: int, reason: str, *, purge: bool = False) -> NoteInfo:
    """Close a note with a reason (it stays visible to --all and --at); `purge` deletes it for good."""
    from sqlalchemy import text

    if not (reason or "").strip():
        raise InvalidInputError("forgetting a note needs a reason (--reason)")
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        note = _get(conn, sid, note_id, store, lock=True)
        if purge:
            conn.execute(text("DELETE FROM notes WHERE id = :i"), {"i": note_id})
            return note
        if not note.live:
            raise ConflictError(f"note {note_id} is already closed ({note.closed_reason})")
        conn.execute(text("UPDATE notes SET valid_until = clock_timestamp(), closed_reason = :r WHERE id = :i"),
                     {"r": reason.strip(), "i": note_id})
        return _get(conn, sid, note_id, store)
