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


class StoreRef:
    """A named store whose id is looked up once per process instead of once per call.

    Only an id that is committed is kept: one created inside a transaction that may still roll back is
    looked up again next time. A store removed by another process after the look-up is not noticed."""

    __slots__ = ("name", "_id")

    def __init__(self, name: str) -> None:
        self.name = validate_store_name(name)
        self._id: int | None = None

    def id(self, conn: Connection, *, create: bool) -> int | None:
        """The store's id (None when it does not exist and `create` is False)."""
        if self._id is not None:
            return self._id
        from sqlalchemy import text

        found = conn.execute(text("SELECT id FROM stores WHERE name = :n"), {"n": self.name}).scalar()
        if found is not None:
            self._id = found
            return found
        return store_id(conn, self.name, create=True) if create else None

    def __repr__(self) -> str:
        return f"StoreRef({self.name!r})"


def lock_store(conn: Connection, store: int, scope: str) -> None:
    """Serialize one kind of write within a store until the transaction ends."""
    from sqlalchemy import text

    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"ltm:{scope}:{store}"})
