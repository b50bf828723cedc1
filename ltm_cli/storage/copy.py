"""Binary COPY for bulk writes: vectors travel as binary halfvec, never as text (~70x cheaper per vector)."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)


def _field(value: Any, kind: str) -> bytes:
    if value is None:
        return NULL
    if kind == "int4":
        return struct.pack(">ii", 4, value)
    if kind == "int8":
        return struct.pack(">iq", 8, value)
    if kind == "timestamptz":  # microseconds since 2000-01-01 UTC
        delta = value - PG_EPOCH
        return struct.pack(">iq", 8, (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)
    if kind == "uuid":
        return struct.pack(">i", 16) + value.bytes
    if kind == "text":
        data = value.encode("utf-8")
    elif kind == "bytea":
        data = bytes(value)
    elif kind == "jsonb":
        data = b"\x01" + json.dumps(value, ensure_ascii=False).encode("utf-8")
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    return struct.pack(">i", len(data)) + data


def encode_rows(rows: Iterable[Sequence[Any]], kinds: Sequence[str]) -> bytes:
    count = struct.pack(">h", len(kinds))
    parts = [HEADER]
    for row in rows:
        parts.append(count)
        parts.extend(_field(v, k) for v, k in zip(row, kinds, strict=True))
    parts.append(TRAILER)
    return b"".join(parts)


def encode_embeddings(space_id: int, hashes: Sequence[bytes], matrix: np.ndarray) -> bytes:
    """(space_id int4, content_hash bytea, embedding halfvec) rows, built in one numpy pass."""
    n, dim = matrix.shape
    hash_len = len(hashes[0]) if n else 32
    row = np.dtype([
        ("fields", ">i2"), ("l1", ">i4"), ("space", ">i4"), ("l2", ">i4"), ("hash", f"S{hash_len}"),
        ("l3", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f2", (dim,)),
    ])
    out = np.zeros(n, dtype=row)
    out["fields"] = 3
    out["l1"] = 4
    out["space"] = space_id
    out["l2"] = hash_len
    out["hash"] = hashes
    out["l3"] = 4 + 2 * dim
    out["dim"] = dim
    out["vec"] = matrix.astype(np.float16)
    return HEADER + out.tobytes() + TRAILER


def copy_in(conn: Connection, table: str, columns: Sequence[str], payload: bytes) -> None:
    raw = conn.connection.dbapi_connection  # the psycopg2 connection behind SQLAlchemy's
    with raw.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT binary)", io.BytesIO(payload))
