"""Embedding spaces, the content-addressed embedding cache, and one partial HNSW index per space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ltm_cli.storage.engine import fetch

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.engine import Connection


def ensure_space(conn: Connection, provider: str, model: str, dim: int) -> int:
    from sqlalchemy import text

    params = {"p": provider, "m": model, "d": dim}
    conn.execute(text("INSERT INTO embedding_spaces (provider, model, dim) VALUES (:p, :m, :d) "
                      "ON CONFLICT (provider, model, dim) DO NOTHING"), params)
    return conn.execute(text("SELECT id FROM embedding_spaces WHERE provider = :p AND model = :m AND dim = :d"),
                        params).scalar_one()


def find_space(conn: Connection | Any, provider: str, model: str, dim: int) -> int | None:
    """The space's id, or None; `conn`: either kind (see engine.fetch)."""
    rows = fetch(conn, "SELECT id FROM embedding_spaces WHERE provider = %(p)s AND model = %(m)s AND dim = %(d)s",
                 {"p": provider, "m": model, "d": dim})
    return rows[0][0] if rows else None


def missing(conn: Connection, space_id: int, hashes: Sequence[bytes]) -> set[bytes]:
    """The hashes that have no vector in this space yet (the cache lookup)."""
    from sqlalchemy import bindparam, text
    from sqlalchemy.dialects.postgresql import ARRAY, BYTEA

    wanted = set(hashes)
    if not wanted:
        return set()
    stmt = text("SELECT content_hash FROM embeddings WHERE space_id = :s AND content_hash = ANY(:h)").bindparams(
        bindparam("h", type_=ARRAY(BYTEA)))
    found = {bytes(r[0]) for r in conn.execute(stmt, {"s": space_id, "h": list(wanted)})}
    return wanted - found


def write(conn: Connection, space_id: int, hashes: Sequence[bytes], matrix: np.ndarray) -> None:
    """Add vectors; ones already present (a concurrent writer) are kept as they are."""
    from sqlalchemy import text

    from ltm_cli.storage.copy import copy_in, encode_embeddings

    if not len(hashes):
        return
    conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS ltm_embeddings_in "
                      "(space_id int, content_hash bytea, embedding halfvec) ON COMMIT DELETE ROWS"))
    copy_in(conn, "ltm_embeddings_in", ("space_id", "content_hash", "embedding"),
            encode_embeddings(space_id, hashes, matrix))
    conn.execute(text("INSERT INTO embeddings (space_id, content_hash, embedding) "
                      "SELECT DISTINCT ON (content_hash) space_id, content_hash, embedding FROM ltm_embeddings_in "
                      "ON CONFLICT DO NOTHING"))
    conn.execute(text("TRUNCATE ltm_embeddings_in"))


# bench/hnsw_study.py, 100k synthetic vectors, ef_search 100 (what search uses): pgvector's default build (m 16,
# ef_construction 64) finds 0.899 of the exact top 10, ef_construction 200 finds 0.971 with the vector leg at
# 7.0 ms p50; the index is the same size (112 MB), the build 2.3x slower. Real SciFact vectors: 0.997 either way.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200


def index_name(space_id: int) -> str:
    return f"embeddings_hnsw_space_{int(space_id)}"


def has_index(conn: Connection, space_id: int) -> bool:
    from sqlalchemy import text

    return conn.execute(text("SELECT to_regclass(:n)"), {"n": index_name(space_id)}).scalar() is not None


# pgvector builds the graph in maintenance_work_mem; once it no longer fits, the build goes on in index pages,
# several times slower (bench/scale.py: 47 min for 1M chunks under a fixed 256MB). pgvector's own notice ("no
# longer fits … after 5654 tuples" at 8MB, 384 dimensions, m 16) puts a tuple at ~1,480 bytes: its halfvec plus
# about 48 bytes per unit of m for the neighbour lists.
MIN_BUILD_MEMORY = 64 * 2**20
BUILD_MEMORY_SHARE = 4  # at most a quarter of this machine's memory (the embedded server shares it)


def build_memory(rows: int, dim: int, current: int = 0, limit: int | None = None) -> int:
    """Bytes of maintenance_work_mem for building an HNSW index over `rows` vectors: the graph with a tenth to
    spare, within `limit` (default: `memory_limit()`), never below `current` (the server's own setting) or
    MIN_BUILD_MEMORY."""
    need = int(rows * (2 * dim + 48 * HNSW_M + 16) * 1.1)
    return max(min(need, memory_limit() if limit is None else limit), current, MIN_BUILD_MEMORY)


def memory_limit() -> int:
    """A quarter of this machine's memory, and no more than /dev/shm has free: a parallel build keeps its graph
    in shared memory, and a container's /dev/shm is often only 64MB."""
    import contextlib
    import os

    limit = 2**62
    with contextlib.suppress(ValueError, OSError, AttributeError):  # no sysconf, or no such name there
        limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // BUILD_MEMORY_SHARE
    try:
        shm = os.statvfs("/dev/shm")
        limit = min(limit, int(shm.f_bavail * shm.f_frsize * 0.8))
    except OSError:
        pass
    return limit


def ensure_index(conn: Connection, space_id: int, dim: int) -> bool:
    """Build the space's HNSW index if missing; True when it was built now, with maintenance_work_mem sized to
    the space (`build_memory`).

    A partial expression index per space is what lets spaces of different dimensions share one table:
    queries must say `WHERE space_id = <literal>` and order by `embedding::halfvec(<dim>) <=> …`.
    """
    from sqlalchemy import text

    if has_index(conn, space_id):
        return False
    rows, current = conn.execute(text(
        "SELECT (SELECT count(*) FROM embeddings WHERE space_id = :s), "
        "pg_size_bytes(current_setting('maintenance_work_mem'))"), {"s": int(space_id)}).one()
    memory = build_memory(rows, dim, current)
    if memory > current:
        conn.execute(text(f"SET LOCAL maintenance_work_mem = '{memory // 1024}kB'"))
    conn.execute(text(
        f"CREATE INDEX IF NOT EXISTS {index_name(space_id)} ON embeddings "
        f"USING hnsw ((embedding::halfvec({int(dim)})) halfvec_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE space_id = {int(space_id)}"))
    return True


def drop_index(conn: Connection, space_id: int) -> None:
    """Bulk loads write without the index and rebuild it after: HNSW inserts run at hundreds of rows/s."""
    from sqlalchemy import text

    conn.execute(text(f"DROP INDEX IF EXISTS {index_name(space_id)}"))


def vector_literal(vector: np.ndarray) -> str:
    """A query vector as pgvector text (one per query; bulk writes use binary COPY)."""
    return "[" + ",".join(f"{x:.6g}" for x in vector.tolist()) + "]"
