"""Ingested documents: list, show, remove."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError, NotFoundError
from ltm_cli.services.filters import like
from ltm_cli.storage.stores import StoreRef

if TYPE_CHECKING:
    from ltm_cli.storage.engine import Database


@dataclass(frozen=True)
class DocumentInfo:
    id: int
    source: str
    title: str | None
    media_type: str
    chunks: int
    tags: list[str]
    metadata: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class ChunkInfo:
    ordinal: int
    heading: str | None
    location: dict[str, Any]
    token_count: int
    text: str


@dataclass(frozen=True)
class DocumentDetail:
    document: DocumentInfo
    chunks: list[ChunkInfo] = field(default_factory=list)


_SELECT = """
    SELECT d.id, d.source, d.title, d.media_type,
           (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks,
           d.tags, d.metadata - '_pipeline' AS metadata, d.created_at, d.updated_at
    FROM documents d WHERE d.store_id = :s
"""


def list_documents(db: Database, store: StoreRef, *, tag: str | None = None, source: str | None = None,
                   limit: int | None = None) -> list[DocumentInfo]:
    from sqlalchemy import text

    sql, params = _SELECT, {}
    if tag:
        sql += " AND :tag = ANY(d.tags)"
        params["tag"] = tag
    if source:
        sql += " AND d.source LIKE :src ESCAPE '\\'"
        params["src"] = like(source)
    sql += " ORDER BY d.source"
    if limit:
        sql += f" LIMIT {int(limit)}"
    with db.connect() as conn:
        sid = store.id(conn, create=False)
        if sid is None:
            return []
        return [DocumentInfo(**row) for row in conn.execute(text(sql), {"s": sid, **params}).mappings()]


def _resolve(conn: Any, sid: int, ref: str) -> list[int]:
    """A document by id, exact source, a path that resolves to its source, or a glob over sources."""
    from pathlib import Path

    from sqlalchemy import text

    if ref.isdigit():
        rows = conn.execute(text("SELECT id FROM documents WHERE store_id = :s AND id = :i"),
                            {"s": sid, "i": int(ref)}).scalars().all()
        if rows:
            return list(rows)
    candidates = {ref, str(Path(ref).expanduser().resolve())}
    rows = conn.execute(text("SELECT id FROM documents WHERE store_id = :s AND source = ANY(:c)"),
                        {"s": sid, "c": list(candidates)}).scalars().all()
    if rows or not any(ch in ref for ch in "*?"):
        return list(rows)
    return list(conn.execute(text("SELECT id FROM documents WHERE store_id = :s AND source LIKE :p ESCAPE '\\'"),
                             {"s": sid, "p": like(ref)}).scalars())


def show(db: Database, store: StoreRef, ref: str) -> DocumentDetail:
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        ids = _resolve(conn, sid, ref) if sid is not None else []
        if not ids:
            raise NotFoundError(f"no document {ref!r} in store {store.name!r}")
        if len(ids) > 1:  # found, but which one: the reference is what is wrong (exit 4), not the store
            raise InvalidInputError(f"{ref!r} matches {len(ids)} documents; name one",
                                    hint="`ltm docs list` shows their ids and sources")
        row = conn.execute(text(_SELECT + " AND d.id = :i"), {"s": sid, "i": ids[0]}).mappings().one()
        chunks = [ChunkInfo(**r) for r in conn.execute(text(
            "SELECT ordinal, heading, location, token_count, text FROM chunks WHERE document_id = :i ORDER BY ordinal"),
            {"i": ids[0]}).mappings()]
    return DocumentDetail(DocumentInfo(**row), chunks)


def remove(db: Database, store: StoreRef, refs: list[str]) -> list[str]:
    """Delete documents (their chunks go with them); returns the sources removed."""
    from sqlalchemy import text

    with db.connect() as conn:
        sid = store.id(conn, create=False)
        ids: list[int] = []
        for ref in refs:
            found = _resolve(conn, sid, ref) if sid is not None else []
            if not found:
                raise NotFoundError(f"no document {ref!r} in store {store.name!r}")
            ids.extend(found)
        return list(conn.execute(text("DELETE FROM documents WHERE id = ANY(:ids) RETURNING source"),
                                 {"ids": sorted(set(ids))}).scalars())
