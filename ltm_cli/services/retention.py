"""Forgetting: everything derived from one origin (`ltm forget`), and retention periods applied by `ltm db gc`."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import ConflictError, InvalidInputError, NotFoundError
from ltm_cli.parsing import PERIOD_DAYS, parse_time
from ltm_cli.services.filters import like
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.storage.engine import Database

# what each retention setting keeps: history = conversations (by their last turn), notes = closed notes
RETENTION_KEYS = {"history": "retention.history", "notes": "retention.notes"}
_DURATION = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$", re.IGNORECASE)
DURATION_HINT = "a period such as 180d, 12w, 6m (30 days each) or 1y; a bare number is days"


def parse_duration(value: Any, what: str = "period") -> dt.timedelta:
    """180d, 12w, 6m (months of 30 days), 1y (365 days), or a bare number of days; at least one day."""
    if isinstance(value, int) and not isinstance(value, bool):
        days = value
    else:
        match = _DURATION.match(str(value)) if isinstance(value, str) else None
        if match is None:
            raise InvalidInputError(f"{what}: {value!r} is not a period", hint=DURATION_HINT)
        days = int(match.group(1)) * PERIOD_DAYS[match.group(2).lower()]
    if days < 1:
        raise InvalidInputError(f"{what}: {value!r} would keep nothing", hint="give at least 1d")
    try:
        return dt.timedelta(days=days)
    except OverflowError as exc:
        raise InvalidInputError(f"{what}: {value!r} is too long", hint=DURATION_HINT) from exc


def cutoff(before: str | dt.datetime, *, now: dt.datetime | None = None) -> dt.datetime:
    """A point in time: an ISO date or date-time, or a period back from now (180d)."""
    if isinstance(before, str) and _DURATION.match(before):
        return (now or dt.datetime.now(dt.UTC)) - parse_duration(before, "--before")
    when = parse_time(before)
    if when is None:
        raise InvalidInputError("--before needs a date or a period", hint="e.g. 2025-01-01 or 180d")
    return when


# -- retention policy ------------------------------------------------------------------------------------
def policy(conn: Connection, store_id: int) -> dict[str, Any]:
    """The store's retention settings as set ({"history": "180d"}); absent ones are not there."""
    from ltm_cli.services.settings import _active

    active = _active(conn, store_id, "retention")
    return {part: active[key].value for part, key in RETENTION_KEYS.items() if key in active}


@dataclass(frozen=True)
class Expired:
    """What one store's retention policy removed (or, in a dry run, would remove)."""

    store: str
    policy: dict[str, Any]
    conversations: int = 0
    notes: int = 0
    problem: str | None = None  # a policy that is not a period: that store is left alone


def expire(conn: Connection) -> list[Expired]:
    """Apply every store's retention policy in the caller's transaction. A store whose policy is not a period
    is left whole and reported (a typo must not turn into "keep nothing"), the others go on."""
    from sqlalchemy import text

    done = []
    for sid, name in conn.execute(text("SELECT id, name FROM stores ORDER BY name")).all():
        rules = policy(conn, sid)
        if not rules:
            continue
        try:
            periods = {part: parse_duration(value, RETENTION_KEYS[part]) for part, value in rules.items()}
        except InvalidInputError as exc:
            done.append(Expired(name, rules, problem=f"{exc.message} ({DURATION_HINT})"))
            continue
        conversations = notes = 0
        if "history" in periods:
            conversations = conn.execute(text(
                "DELETE FROM conversations WHERE store_id = :s AND updated_at < now() - :p"),
                {"s": sid, "p": periods["history"]}).rowcount
        if "notes" in periods:
            notes = conn.execute(text(
                "DELETE FROM notes WHERE store_id = :s AND valid_until IS NOT NULL AND valid_until < now() - :p"),
                {"s": sid, "p": periods["notes"]}).rowcount
        done.append(Expired(name, rules, conversations, notes))
    return done


# -- forget ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForgottenDocument:
    id: int
    source: str
    chunks: int


@dataclass(frozen=True)
class ForgottenConversation:
    id: str
    messages: int
    updated_at: dt.datetime


@dataclass(frozen=True)
class ForgottenNote:
    id: int
    text: str
    live: bool
    why: str  # "tag", or "derived" (it cites a turn or a document that goes)


@dataclass
class Forgotten:
    dry_run: bool
    documents: list[ForgottenDocument] = field(default_factory=list)
    conversations: list[ForgottenConversation] = field(default_factory=list)
    notes: list[ForgottenNote] = field(default_factory=list)
    vectors: int | None = None  # unused vectors collected afterwards (None: dry run, or gc refused)
    gc_refused: str | None = None  # why the vectors were not collected (the rows are gone all the same)

    @property
    def empty(self) -> bool:
        return not (self.documents or self.conversations or self.notes)


def _source_patterns(source: str) -> list[str]:
    """The glob as given and as an absolute path (sources are stored resolved), both as LIKE patterns."""
    patterns = {source}
    if not source.startswith(("stdin:", "*")):
        head, tail = os.path.split(os.path.expanduser(source))
        if head and not any(c in head for c in "*?["):
            patterns.add(os.path.join(str(Path(head).resolve()), tail))
        else:
            patterns.add(os.path.join(str(Path.cwd().resolve()), os.path.expanduser(source)))
    return [like(p) for p in sorted(patterns)]


def _documents(conn: Connection, sid: int, source: str | None, tag: str | None) -> list[ForgottenDocument]:
    from sqlalchemy import text

    where, params = [], {"s": sid}
    if source:
        for n, pattern in enumerate(_source_patterns(source)):
            where.append(f"d.source LIKE :p{n} ESCAPE '\\'")
            params[f"p{n}"] = pattern
    if tag:
        where.append(":tag = ANY(d.tags)")
        params["tag"] = tag
    if not where:
        return []
    rows = conn.execute(text(
        "SELECT d.id, d.source, (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks "
        f"FROM documents d WHERE d.store_id = :s AND ({' OR '.join(where)}) ORDER BY d.source FOR UPDATE"),
        params).mappings()
    return [ForgottenDocument(**row) for row in rows]


def _conversations(conn: Connection, sid: int, store: StoreRef, conversation: str | None,
                   before: dt.datetime | None) -> tuple[list[Any], list[ForgottenConversation]]:
    from sqlalchemy import text

    from ltm_cli.services.history import _DISPLAY_ID, _find, check_ref

    where: list[str] = []
    params: dict[str, Any] = {"s": sid}
    if check_ref(conversation):
        found = _find(conn, sid, conversation)
        if found is None:
            raise NotFoundError(f"no conversation {conversation!r} in store {store.name!r}")
        where.append("c.id = :c")
        params["c"] = found
    if before is not None:
        where.append("c.updated_at < :b")
        params["b"] = before
    if not where:
        return [], []
    rows = conn.execute(text(
        f"SELECT c.id AS uuid, {_DISPLAY_ID} AS id, (SELECT count(*) FROM messages m "
        "WHERE m.conversation_id = c.id) AS messages, c.updated_at "
        f"FROM conversations c WHERE c.store_id = :s AND ({' OR '.join(where)}) ORDER BY c.updated_at FOR UPDATE"),
        params).mappings().all()
    return [r["uuid"] for r in rows], [ForgottenConversation(r["id"], r["messages"], r["updated_at"]) for r in rows]


def _notes(conn: Connection, sid: int, tag: str | None, documents: list[int],
           conversations: list[Any]) -> list[ForgottenNote]:
    """Notes with the tag, and notes distilled from what goes: a fact learnt from a forgotten turn or
    document is derived from it, so it goes too."""
    from sqlalchemy import text

    rows = conn.execute(text("""
        SELECT n.id, n.text, n.valid_until IS NULL AS live,
               CASE WHEN :tag IS NOT NULL AND :tag = ANY(n.tags) THEN 'tag' ELSE 'derived' END AS why
        FROM notes n WHERE n.store_id = :s AND (
          (:tag IS NOT NULL AND :tag = ANY(n.tags))
          OR n.source_documents && CAST(:docs AS bigint[])
          OR n.source_messages && ARRAY(SELECT m.id FROM messages m WHERE m.conversation_id = ANY(:convs)))
        ORDER BY n.id FOR UPDATE"""), {"s": sid, "tag": tag, "docs": documents, "convs": conversations})
    return [ForgottenNote(**row) for row in rows.mappings()]


def forget(db: Database, store: StoreRef, *, source: str | None = None, conversation: str | None = None,
           before: str | dt.datetime | None = None, tag: str | None = None, dry_run: bool = True) -> Forgotten:
    """Delete, in one transaction, the documents whose source matches `source` (a glob; `*` crosses
    directories), the conversation `conversation`, the conversations last active before `before` (a date or
    180d), the documents and notes tagged `tag`, and the notes derived from any of them. Then collect the
    vectors nothing uses any more; if a writer runs that is refused, and `gc_refused` says so."""
    if not (source or conversation or before or tag):
        raise InvalidInputError("say what to forget", hint="--source GLOB, --conversation ID, --before DATE or --tag T")
    when = cutoff(before) if before else None
    from sqlalchemy import text

    result = Forgotten(dry_run=dry_run)
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            if conversation:
                raise NotFoundError(f"no conversation {conversation!r} in store {store.name!r}")
            return result
        result.documents = _documents(conn, sid, source, tag)
        uuids, result.conversations = _conversations(conn, sid, store, conversation, when)
        result.notes = _notes(conn, sid, tag, [d.id for d in result.documents], uuids)
        if dry_run or result.empty:
            return result
        conn.execute(text("DELETE FROM notes WHERE id = ANY(:ids)"), {"ids": [n.id for n in result.notes]})
        conn.execute(text("DELETE FROM documents WHERE id = ANY(:ids)"), {"ids": [d.id for d in result.documents]})
        conn.execute(text("DELETE FROM conversations WHERE id = ANY(:ids)"), {"ids": uuids})
    from ltm_cli.services import admin

    try:
        result.vectors = admin.gc(db, retention=False).vectors
    except ConflictError as exc:
        result.gc_refused = exc.message
    return result
