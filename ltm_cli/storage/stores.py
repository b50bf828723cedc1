"""Named memory stores: resolved by name, created on first write."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError
from ltm_cli.storage.engine import fetch

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

STORE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def missing_store_warning(name: str) -> str:
    """What a read of a store that does not exist says, beside its empty result: a typo in --store or
    LTM_STORE would otherwise look exactly like a store with nothing that matches."""
    return f"store {name!r} does not exist (yet): nothing is stored in it (`ltm store list` shows the stores)"


def validate_store_name(name: str) -> str:
    if not STORE_NAME.match(name):
        raise InvalidInputError(
            f"invalid store name {name!r}",
            hint="use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit",
        )
    return name


def store_id(conn: Connection | Any, name: str, *, create: bool) -> int | None:
    """The store's id; with create=True it is made if missing (safe under concurrency). `conn`: either kind
    (see engine.fetch)."""
    validate_store_name(name)
    found = _find(conn, name)
    if found is not None or not create:
        return found
    fetch(conn, "INSERT INTO stores (name) VALUES (%(n)s) ON CONFLICT (name) DO NOTHING", {"n": name})
    return _find(conn, name)


def _find(conn: Connection | Any, name: str) -> int | None:
    rows = fetch(conn, "SELECT id FROM stores WHERE name = %(n)s", {"n": name})
    return rows[0][0] if rows else None


class StoreRef:
    """A named store whose id is looked up once per process instead of once per call.

    Only an id that is committed is kept: one created inside a transaction that may still roll back is
    looked up again next time. A store removed by another process after the look-up is not noticed."""

    __slots__ = ("name", "_id")

    def __init__(self, name: str) -> None:
        self.name = validate_store_name(name)
        self._id: int | None = None

    def id(self, conn: Connection | Any, *, create: bool) -> int | None:
        """The store's id (None when it does not exist and `create` is False); `conn`: either kind."""
        if self._id is not None:
            return self._id
        found = _find(conn, self.name)
        if found is not None:
            self._id = found
            return found
        return store_id(conn, self.name, create=True) if create else None

    def __repr__(self) -> str:
        return f"StoreRef({self.name!r})"


def lock_store(conn: Connection | Any, store: int, scope: str) -> None:
    """Serialize one kind of write within a store until the transaction ends; `conn`: either kind."""
    fetch(conn, "SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, 0))", {"k": f"ltm:{scope}:{store}"})
