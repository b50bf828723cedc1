"""Named memory stores: resolved by name, created on first write."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ltm_cli.errors import InvalidInputError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_store_name(name: str) -> str:
    if not STORE_NAME.match(name):
        raise InvalidInputError(
            f"invalid store name {name!r}",
            hint="use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit",
        )
    return name


def store_id(conn: Connection, name: str, *, create: bool) -> int | None:
    """The store's id; with create=True it is made if missing (safe under concurrency)."""
    from sqlalchemy import text

    validate_store_name(name)
    found = conn.execute(text("SELECT id FROM stores WHERE name = :n"), {"n": name}).scalar()
    if found is not None or not create:
        return found
    conn.execute(text("INSERT INTO stores (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"), {"n": name})
    return conn.execute(text("SELECT id FROM stores WHERE name = :n"), {"n": name}).scalar()


def lock_store(conn: Connection, store: int, scope: str) -> None:
    """Serialize one kind of write within a store until the transaction ends."""
    from sqlalchemy import text

    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"ltm:{scope}:{store}"})
