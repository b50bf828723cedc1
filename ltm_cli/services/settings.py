"""Settings memory: append-only, versioned key -> JSON values with the active value one query away."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import ConflictError, InvalidInputError, NotFoundError
from ltm_cli.storage.engine import fetch
from ltm_cli.storage.stores import StoreRef, lock_store

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.storage.engine import Database

KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
MAX_KEY_LENGTH = 256

_VERSION_COLUMNS = "key, version, value, deleted, note, author, created_at"
_ACTIVE_SQL = """
    SELECT DISTINCT ON (key) {columns}
    FROM settings WHERE store_id = %(store)s {extra}
    ORDER BY key, version DESC
"""
# Every query here is written for engine.fetch (`%(name)s`), so it runs on Database.cursor(), a plain psycopg2
# connection (`ltm settings get` imports no SQLAlchemy), and on the SQLAlchemy connections of other services
# (retention reads _active inside its own transaction).


@dataclass(frozen=True)
class Version:
    key: str
    version: int
    value: Any
    deleted: bool
    note: str | None
    author: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class SetResult:
    key: str
    version: int
    value: Any
    changed: bool  # False when the value was already active and nothing was written


@dataclass(frozen=True)
class ImportResult:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    dry_run: bool = False
    diff: list[dict[str, Any]] = field(default_factory=list)


# -- values and keys -----------------------------------------------------------------------------------
def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not KEY.match(key):
        raise InvalidInputError(
            f"invalid setting key {key!r}",
            hint="use letters, digits, '_' and '-', with dots between segments (e.g. voice.speed)",
        )
    return key


def parse_value(raw: str, *, force_string: bool = False) -> Any:
    """JSON when `raw` is valid JSON (1.2, true, null, [..], {..}), else the string itself."""
    if force_string:
        return check_value(raw)
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return check_value(raw)
    return check_value(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def check_value(value: Any, key: str = "value") -> Any:
    """PostgreSQL's jsonb holds no NUL characters and no infinities: say so instead of failing later."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInputError(f"{key} contains a NUL character, which PostgreSQL cannot store")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(f"{key} is not valid Unicode text: {exc.reason}") from exc
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{key} is not a finite number")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):  # JSON would turn {1: "a"} into {"1": "a"}
                raise InvalidInputError(f"{key} has a key that is not a string: {k!r}")
            check_value(k, key)
            check_value(v, key)
    elif isinstance(value, list):
        for v in value:
            check_value(v, key)
    elif value is not None and not isinstance(value, (bool, int, float)):
        # a set, tuple, datetime, bytes…: what JSON cannot hold as it is, refused rather than changed on the way
        raise InvalidInputError(f"{key} is a {type(value).__name__}, which JSON cannot hold",
                                hint="use a JSON value: string, number, boolean, null, list or object")
    return value


def canonical(value: Any) -> str:
    """Equality for 'same value again', as jsonb sees it: numbers by value (JSON has one number type, so
    1 and 1.0 are equal and 1e16 reads back as 10000000000000000), true is not 1, key order is free."""
    return json.dumps(_numbers_by_value(value), sort_keys=True, ensure_ascii=False)


def _numbers_by_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(Decimal(repr(value)))  # the number its JSON text names, as jsonb stores it
    if isinstance(value, dict):
        return {k: _numbers_by_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers_by_value(v) for v in value]
    return value


def check_rules(key: str, value: Any) -> None:
    """Values other code reads and cannot use are refused when written, not when read: the retention periods
    (`ltm db gc` would otherwise skip the store with a warning), parsed by retention's own parser."""
    if key != "retention" and not key.startswith("retention."):
        return
    from ltm_cli.services.retention import DURATION_HINT, RETENTION_KEYS, parse_duration

    if key not in RETENTION_KEYS.values():
        raise InvalidInputError(f"{key!r} is not a retention setting: use {' or '.join(RETENTION_KEYS.values())}")
    try:
        parse_duration(value, key)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc.message} ({DURATION_HINT})") from None


def _ancestors(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


# -- reading ------------------------------------------------------------------------------------------
def _active(conn: Connection | Any, store: int, prefix: str | None = None,
            at: dt.datetime | None = None) -> dict[str, Version]:
    """Active (not deleted) versions, optionally under `prefix` (the key itself or its subtree) and as of `at`."""
    extra, params = "", {"store": store}
    if prefix:
        extra += " AND (key = %(prefix)s OR starts_with(key, %(subtree)s))"
        params.update(prefix=prefix, subtree=prefix + ".")
    if at is not None:
        extra += " AND created_at <= %(at)s"
        params["at"] = at
    versions = [Version(*row) for row in fetch(conn, _ACTIVE_SQL.format(columns=_VERSION_COLUMNS, extra=extra),
                                                params)]
    return {v.key: v for v in versions if not v.deleted}


def _nest(prefix: str, versions: Mapping[str, Version]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key in sorted(versions):
        node = tree
        parts = key[len(prefix) + 1:].split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = versions[key].value
    return tree


def get(db: Database, store: StoreRef, key: str, *, at: dt.datetime | None = None) -> Any:
    """The active value of `key`, or its subtree as an object; NotFoundError when neither exists."""
    validate_key(key)
    with db.cursor() as cur:
        sid = store.id(cur, create=False)
        found = _active(cur, sid, key, at) if sid is not None else {}
    if key in found:
        return found[key].value
    if found:
        return _nest(key, found)
    when = f" at {at.isoformat()}" if at else ""
    raise NotFoundError(f"setting {key!r} not found in store {store.name!r}{when}")


def list_active(db: Database, store: StoreRef, prefix: str | None = None) -> list[Version]:
    if prefix:
        validate_key(prefix)
    with db.cursor() as cur:
        sid = store.id(cur, create=False)
        if sid is None:
            return []
        return sorted(_active(cur, sid, prefix).values(), key=lambda v: v.key)


def history(db: Database, store: StoreRef, key: str | None = None) -> list[Version]:
    """Every version, deletions included, oldest first: of `key` and its subtree, or of the whole store."""
    if key:
        validate_key(key)
    with db.cursor() as cur:
        sid = store.id(cur, create=False)
        if sid is None:
            rows = []
        else:
            extra = " AND (key = %(key)s OR starts_with(key, %(subtree)s))" if key else ""
            rows = fetch(cur, f"SELECT {_VERSION_COLUMNS} FROM settings WHERE store_id = %(store)s{extra} "
                              "ORDER BY created_at, id", {"store": sid, "key": key, "subtree": f"{key}."})
        versions = [Version(*r) for r in rows]
    if key and not versions:
        raise NotFoundError(f"setting {key!r} has no history in store {store.name!r}")
    return versions


# -- writing ------------------------------------------------------------------------------------------
def _check_shape(key: str, active_keys: Iterable[str]) -> None:
    """A key is either a value or a group of keys, never both."""
    active = set(active_keys)
    for ancestor in _ancestors(key):
        if ancestor in active:
            raise ConflictError(
                f"cannot set {key!r}: {ancestor!r} holds a value, and a key cannot be both a value and a group",
                hint=f"unset {ancestor!r} first, or choose another key",
            )
    children = sorted(k for k in active if k.startswith(key + "."))
    if children:
        raise ConflictError(
            f"cannot set {key!r}: it is a group holding {', '.join(children[:3])}"
            f"{' …' if len(children) > 3 else ''}, and a key cannot be both a value and a group",
            hint=f"unset {key!r} with --recursive first, or set a key below it",
        )


def _insert(conn: Any, store: int, key: str, value: Any, *, deleted: bool = False,
            note: str | None = None, author: str | None = None) -> int:
    return fetch(conn, """
        INSERT INTO settings (store_id, key, version, value, deleted, note, author)
        SELECT %(store)s, %(key)s, coalesce(max(version), 0) + 1, CAST(%(value)s AS jsonb), %(deleted)s, %(note)s,
               %(author)s
        FROM settings WHERE store_id = %(store)s AND key = %(key)s
        RETURNING version""", {"store": store, "key": key, "deleted": deleted, "note": note,
                               "author": author, "value": None if deleted else json.dumps(value)})[0][0]


def _writable_store(conn: Any, store: StoreRef) -> int:
    sid = store.id(conn, create=True)
    lock_store(conn, sid, "settings")
    return sid


def set_value(db: Database, store: StoreRef, key: str, value: Any, *, note: str | None = None,
              author: str | None = None, force: bool = False) -> SetResult:
    validate_key(key)
    check_value(value)
    check_rules(key, value)
    with db.cursor() as conn:
        sid = _writable_store(conn, store)
        active = _active(conn, sid)
        current = active.get(key)
        if current is not None and not force and canonical(current.value) == canonical(value):
            return SetResult(key, current.version, current.value, changed=False)
        _check_shape(key, (k for k in active if k != key))
        version = _insert(conn, sid, key, value, note=note, author=author)
    return SetResult(key, version, value, changed=True)


def unset(db: Database, store: StoreRef, key: str, *, recursive: bool = False, note: str | None = None,
          author: str | None = None) -> list[str]:
    """Record deletions (history keeps every old value); returns the keys removed."""
    validate_key(key)
    with db.cursor() as conn:
        sid = _writable_store(conn, store)
        found = _active(conn, sid, key)
        if not found:
            raise NotFoundError(f"setting {key!r} not found in store {store.name!r}")
        if key not in found and not recursive:
            raise ConflictError(f"{key!r} is a group of {len(found)} key(s)", hint="add --recursive to unset them all")
        for k in sorted(found):
            _insert(conn, sid, k, None, deleted=True, note=note, author=author)
    return sorted(found)


def revert(db: Database, store: StoreRef, key: str, *, to_version: int | None = None, at: dt.datetime | None = None,
           note: str | None = None, author: str | None = None, force: bool = False) -> SetResult:
    """Write a new version equal to an old one (default: the version before the current one). As with
    set_value, when that is the active state already nothing is written unless `force` (changed=False)."""
    validate_key(key)
    with db.cursor() as conn:
        sid = _writable_store(conn, store)
        rows = [Version(*r) for r in fetch(
            conn, f"SELECT {_VERSION_COLUMNS} FROM settings WHERE store_id = %(s)s AND key = %(k)s ORDER BY version",
            {"s": sid, "k": key})]
        if not rows:
            raise NotFoundError(f"setting {key!r} has no history in store {store.name!r}")
        if to_version is not None:
            target = next((r for r in rows if r.version == to_version), None)
            if target is None:
                raise NotFoundError(f"setting {key!r} has no version {to_version} (latest is {rows[-1].version})")
        elif at is not None:
            earlier = [r for r in rows if r.created_at <= at]
            if not earlier:
                raise NotFoundError(f"setting {key!r} did not exist at {at.isoformat()}")
            target = earlier[-1]
        else:
            if len(rows) < 2:
                raise NotFoundError(f"setting {key!r} has only one version: nothing to revert to")
            target = rows[-2]
        current = rows[-1]
        if not force and _same_state(current, target):
            return SetResult(key, current.version, None if current.deleted else current.value, changed=False)
        note = note or f"revert to version {target.version}"
        if target.deleted:
            version = _insert(conn, sid, key, None, deleted=True, note=note, author=author)
            return SetResult(key, version, None, changed=True)
        try:
            check_rules(key, target.value)
        except InvalidInputError as exc:  # a version written before the rule existed
            raise InvalidInputError(f"cannot revert {key!r} to version {target.version}: {exc.message}",
                                    hint=f"set {key!r} to a valid value instead") from None
        _check_shape(key, (k for k in _active(conn, sid) if k != key))
        version = _insert(conn, sid, key, target.value, note=note, author=author)
    return SetResult(key, version, target.value, changed=True)


def _same_state(a: Version, b: Version) -> bool:
    """Both deletions, or both values equal as set_value compares them."""
    if a.deleted or b.deleted:
        return a.deleted and b.deleted
    return canonical(a.value) == canonical(b.value)


# -- import / export ----------------------------------------------------------------------------------
def export(db: Database, store: StoreRef, prefix: str | None = None) -> dict[str, Any]:
    """Active values as a flat {dotted.key: value} map."""
    return {v.key: v.value for v in list_active(db, store, prefix)}


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key in sorted(flat):
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = flat[key]
    return tree


# Settings files. JSON is flat, as it always was: each top-level key is a dotted settings key and its value is
# the value, objects included. TOML has tables: a table is a group, its keys dotted onto the key it sits under
# (`[voice] speed = 1.2` sets voice.speed), and a table whose only key is VALUE_MARKER is the value of the key
# it sits under: the TOML export marks every object value so, and it imports back as it was. JSON accepts the
# marker too. The marker cannot be a key segment (see KEY).
VALUE_MARKER = "$value"


def to_file(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted.key: value} as written to a settings file: object values marked, the rest as they are."""
    return {key: {VALUE_MARKER: value} if isinstance(value, dict) else value for key, value in flat.items()}


def _marked(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {VALUE_MARKER}


def to_json_file(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted.key: value} as a JSON settings file: as it is, but for a value that looks like the marker."""
    return {key: {VALUE_MARKER: value} if _marked(value) else value for key, value in flat.items()}


def from_json_file(data: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON settings file's object as {dotted.key: value}: its keys as they are, a marked value unwrapped."""
    return {str(key): value[VALUE_MARKER] if _marked(value) else value for key, value in data.items()}


def from_file(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A parsed TOML settings file as {dotted.key: value}, by the rule above."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if _marked(value):
            found = {full: value[VALUE_MARKER]}
        elif isinstance(value, Mapping):
            found = from_file(value, full)
        else:
            found = {full: value}
        twice = sorted(found.keys() & flat.keys())
        if twice:
            raise InvalidInputError(f"setting {twice[0]!r} is given twice in the file")
        flat.update(found)
    return flat


def import_values(db: Database, store: StoreRef, values: Mapping[str, Any], *, dry_run: bool = False,
                  note: str | None = None, author: str | None = None) -> ImportResult:
    """All or nothing: every key is validated (including the value/group rule) before anything is written."""
    problems = []
    for key, value in values.items():
        try:
            validate_key(key)
            check_value(value, f"value of {key!r}")
            check_rules(key, value)
        except InvalidInputError as exc:
            problems.append(exc.message)
    if problems:
        raise InvalidInputError(f"import rejected, nothing written: {problems[0]}"
                                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    result = ImportResult(dry_run=dry_run)
    with db.cursor() as conn:
        sid = _writable_store(conn, store)
        active = _active(conn, sid)
        final = {k: v.value for k, v in active.items()} | dict(values)
        for key in values:
            try:
                _check_shape(key, (k for k in final if k != key))
            except ConflictError as exc:
                raise ConflictError(f"import rejected, nothing written: {exc.message}") from None
        for key in sorted(values):
            value = values[key]
            current = active.get(key)
            if current is None:
                result.added.append(key)
                result.diff.append({"key": key, "change": "added", "old": None, "new": value})
            elif canonical(current.value) != canonical(value):
                result.changed.append(key)
                result.diff.append({"key": key, "change": "changed", "old": current.value, "new": value})
            else:
                result.unchanged.append(key)
                continue
            if not dry_run:
                _insert(conn, sid, key, value, note=note or "import", author=author)
        if dry_run:
            conn.connection.rollback()
    return result
