"""Database administration: init, status, start/stop of the embedded server, migrations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import ConflictError, InvalidInputError
from ltm_cli.storage.engine import SCHEMA_HEAD, WRITERS_LOCK, Database

if TYPE_CHECKING:
    from ltm_cli.services.retention import Expired


@dataclass(frozen=True)
class StoreCounts:
    name: str
    settings: int
    conversations: int
    messages: int
    documents: int
    chunks: int
    notes: int  # live ones
    retention: dict[str, Any] = field(default_factory=dict)  # {"history": "180d", "notes": "1y"} as set


@dataclass(frozen=True)
class SpaceCounts:
    id: int
    provider: str
    model: str
    dim: int
    vectors: int
    index: str  # "ok", or "missing" (searches are exact scans until the next ingest or history write)


@dataclass(frozen=True)
class Status:
    server: str  # "embedded" or "external"
    url: str  # password masked
    server_version: str
    server_version_num: int
    pgvector_version: str | None
    revision: str | None
    head: str
    at_head: bool
    database_size_bytes: int
    data_dir: str | None
    stores: list[StoreCounts] = field(default_factory=list)
    embedding_spaces: list[SpaceCounts] = field(default_factory=list)


def init(db: Database) -> Status:
    """Create the database objects (extension, migrations to head). Idempotent."""
    db.upgrade("head")
    return status(db)


def status(db: Database) -> Status:
    from sqlalchemy import text

    revision = db.current_revision()
    with db.connect(check_schema=False) as conn:
        version = conn.execute(text("SHOW server_version")).scalar()
        version_num = int(conn.execute(text("SHOW server_version_num")).scalar())
        pgvector = conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
        stores: list[StoreCounts] = []
        spaces: list[SpaceCounts] = []
        if revision is not None:
            from ltm_cli.services.retention import policy
            from ltm_cli.services.stores import COUNTS

            rows = conn.execute(text(f"SELECT s.id, s.name, {COUNTS} FROM stores s ORDER BY s.name"))
            stores = [StoreCounts(*row[1:], retention=policy(conn, row[0])) for row in rows.all()]
            rows = conn.execute(text("""
                SELECT e.id, e.provider, e.model, e.dim,
                  (SELECT count(*) FROM embeddings v WHERE v.space_id = e.id),
                  CASE WHEN to_regclass('embeddings_hnsw_space_' || e.id) IS NULL THEN 'missing' ELSE 'ok' END
                FROM embedding_spaces e ORDER BY e.id"""))
            spaces = [SpaceCounts(*row) for row in rows]
    data_dir = str(db.config.home_path / "pgdata") if db.is_embedded else None
    return Status(
        server="embedded" if db.is_embedded else "external",
        url=db.display_url,
        server_version=version,
        server_version_num=version_num,
        pgvector_version=pgvector,
        revision=revision,
        head=SCHEMA_HEAD,
        at_head=revision == SCHEMA_HEAD,
        database_size_bytes=int(size),
        data_dir=data_dir,
        stores=stores,
        embedding_spaces=spaces,
    )


def _embedded_server(db: Database) -> Any:
    if not db.is_embedded:
        raise InvalidInputError(
            "ltm manages only its embedded server, and LTM_DATABASE_URL points at an external one",
            hint="unset LTM_DATABASE_URL (and --database-url) to use the embedded server",
        )
    from ltm_cli.storage.server import EmbeddedServer

    return EmbeddedServer(db.config.home_path)


@dataclass(frozen=True)
class ServerState:
    running: bool
    changed: bool
    pid: int | None
    data_dir: str
    socket_dir: str | None


def start_server(db: Database) -> ServerState:
    server = _embedded_server(db)
    was_running = server.is_running()
    server.ensure_running()
    info = server.info()
    return ServerState(True, not was_running, info.pid, info.data_dir, info.socket_dir)


def stop_server(db: Database) -> ServerState:
    server = _embedded_server(db)
    db.dispose()
    changed = server.stop()
    return ServerState(False, changed, None, str(server.data_dir), str(server.socket_dir))


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_head: bool
    is_current: bool


def migration_history(db: Database | None) -> list[Revision]:
    from alembic.script import ScriptDirectory

    from ltm_cli.storage.engine import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    current = db.current_revision() if db is not None else None
    heads = set(script.get_heads())
    return [
        Revision(rev.revision, rev.down_revision if isinstance(rev.down_revision, (str, type(None))) else None,
                 (rev.doc or "").strip().splitlines()[0] if rev.doc else "", rev.revision in heads,
                 rev.revision == current)
        for rev in reversed(list(script.walk_revisions()))
    ]


@dataclass(frozen=True)
class Collected:
    vectors: int
    dry_run: bool
    retention: list[Expired] = field(default_factory=list)  # per store with a retention policy


def gc(db: Database, *, dry_run: bool = False, retention: bool = True) -> Collected:
    """Apply each store's retention policy (`retention.history`, `retention.notes`), then delete cached vectors
    that no chunk, message or note of any store uses any more. A dry run does both and rolls back, so its
    counts include the vectors the expired rows free.

    Refused (conflict) while an ingest or a history write runs: they write vectors before the rows that use
    them, and those vectors must not go."""
    from sqlalchemy import text

    from ltm_cli.services.retention import expire

    unused = ("FROM embeddings e WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.embed_hash = e.content_hash) "
              "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.embed_hash = e.content_hash) "
              "AND NOT EXISTS (SELECT 1 FROM notes n WHERE n.embed_hash = e.content_hash)")
    with db.connect() as conn:
        if not conn.execute(text("SELECT pg_try_advisory_xact_lock(hashtextextended(:k, 0))"),
                            {"k": WRITERS_LOCK}).scalar():
            raise ConflictError("an ingest or a history write is running", hint="run `ltm db gc` when it ends")
        savepoint = conn.begin_nested() if dry_run else None
        expired = expire(conn) if retention else []
        if savepoint is not None:
            count = conn.execute(text(f"SELECT count(*) {unused}")).scalar_one()
            savepoint.rollback()
            return Collected(count, True, expired)
        return Collected(conn.execute(text(f"DELETE {unused}")).rowcount, False, expired)
