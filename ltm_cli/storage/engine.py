"""Engine and connection handling: URL resolution, schema checks, migrations under an advisory lock."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli.config import Config, mask_url
from ltm_cli.errors import DatabaseUnavailableError, SchemaError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

# The newest migration. tests/test_migrations.py checks it against Alembic's own head so the two never drift;
# keeping it here spares every command the import of Alembic just to compare revisions.
SCHEMA_HEAD = "0005"
WRITERS_LOCK = "ltm:vector-writers"  # advisory lock key: shared by writers, exclusive for `db gc`
MIGRATION_LOCK_KEY = 7_107_949  # pg_advisory_xact_lock key held while migrating ("ltm" in ASCII)


def migrations_dir() -> Path:
    """Migrations ship inside the wheel as ltm_cli/_migrations; in a checkout they are ./migrations."""
    package_dir = Path(__file__).resolve().parent.parent
    bundled = package_dir / "_migrations"
    return bundled if bundled.is_dir() else package_dir.parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept the URLs psql accepts and pin the driver ltm ships with."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def libpq_dsn(url: str) -> str | None:
    """`url` (as normalize_url leaves it) for libpq to read, when libpq reads it as SQLAlchemy does; None for a URL
    only SQLAlchemy should read: another driver, a query key given twice (SQLAlchemy's multi-host form) or a '+'
    in the query (a space to SQLAlchemy, a plus to libpq)."""
    prefix = "postgresql+psycopg2://"
    if not url.startswith(prefix):
        return None
    query = url.partition("?")[2].partition("#")[0]
    keys = [part.partition("=")[0] for part in query.split("&") if part]
    if "+" in query or len(keys) != len(set(keys)):
        return None
    return "postgresql://" + url[len(prefix):]


def fetch(conn: Any, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of one statement with `%(name)s` parameters, on either connection ltm holds: a DB-API cursor
    (Database.cursor) or a SQLAlchemy Connection (Database.connect), which hands the SQL to the driver as it is.
    Services whose queries run on both are written once this way; `%` in the SQL is written `%%`."""
    if hasattr(conn, "exec_driver_sql"):
        result = conn.exec_driver_sql(sql, dict(params or {}))
        return [tuple(row) for row in result] if result.returns_rows else []
    conn.execute(sql, dict(params or {}))
    return conn.fetchall() if conn.description is not None else []


def fetch_dicts(conn: Any, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """`fetch`, each row as a dict by column name."""
    if hasattr(conn, "exec_driver_sql"):
        return [dict(row) for row in conn.exec_driver_sql(sql, dict(params or {})).mappings()]
    conn.execute(sql, dict(params or {}))
    names = [column[0] for column in conn.description]
    return [dict(zip(names, row, strict=True)) for row in conn.fetchall()]


# a quoted literal or identifier (left as it is), or a `:name` that is not part of a `::cast`
_NAMED = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*")|(?<![:\w]):(?!:)([A-Za-z_][A-Za-z0-9_]*)""")


def named(sql: str) -> str:
    """SQL written with `:name` parameters (as SQLAlchemy's text() reads them; `::type` casts and quoted text
    are left alone) in the driver's `%(name)s` style, for `fetch`: queries that filters and retrievers compose
    from `:name` clauses run on a plain cursor too. Dollar-quoted strings are not recognised: keep `:` out of
    them."""
    return _NAMED.sub(lambda m: m.group(1) or f"%({m.group(2)})s", sql.replace("%", "%%"))


def resolve_url(config: Config) -> str:
    """The configured external URL, or the embedded server's (started on first use)."""
    if config.database_url:
        return normalize_url(config.database_url)
    from ltm_cli.storage.server import EmbeddedServer

    return EmbeddedServer(config.home_path).ensure_running()


CONNECT_ARGS = {"connect_timeout": 10, "application_name": "ltm"}


def create_engine_for(url: str, creator: Callable[[], Any] | None = None) -> Engine:
    """An engine for `url`; with `creator`, its connections come from it (see Database.engine)."""
    from sqlalchemy import create_engine

    if creator is not None:
        return create_engine(url, creator=creator, pool_pre_ping=False)
    return create_engine(url, connect_args=CONNECT_ARGS, pool_pre_ping=False)


def migration_lock(connection: Connection) -> None:
    """Serialize migrations across processes (two first commands at once must not both migrate)."""
    from sqlalchemy import text

    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


class Database:
    """One configured database: lazily connected, schema checked once per process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._engine: Engine | None = None
        self._url: str | None = None
        self._schema_checked = False
        self._idle: list[Any] = []  # psycopg2 connections Database.cursor() may use again

    @property
    def is_embedded(self) -> bool:
        return not self.config.database_url

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = resolve_url(self.config)
        return self._url

    @property
    def display_url(self) -> str:
        return mask_url(self.url)

    @property
    def engine(self) -> Engine:
        """SQLAlchemy's engine. Where the plain connections of `cursor` can reach the server, the engine is given
        theirs: one way to connect, and a command that used both (a hybrid search reads the store's embedding
        space first) opens one connection, not two."""
        if self._engine is None:
            target = self._plain_target()
            creator = None if target is None else lambda: self._take_idle() or self._connect_plain(target)
            self._engine = create_engine_for(self.url, creator)
        return self._engine

    def dispose(self) -> None:
        while self._idle:
            self._idle.pop().close()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextlib.contextmanager
    def connect(self, *, check_schema: bool = True, autocommit: bool = False,
                durable: bool = True) -> Iterator[Connection]:
        """A connection in one transaction: committed on success, rolled back on any error.

        `autocommit`: no transaction around the statements (no BEGIN and COMMIT round trips), each statement
        its own; for readers such as search, whose statements each stand alone. A string of several statements
        still runs as one implicit transaction, so `SET LOCAL` before a query in the same string applies to it.
        `durable=False`: the commit does not wait for the write-ahead log to reach the disk (synchronous_commit
        off, this transaction only). For bulk writers that an idempotent re-run repairs (ingest, import): a
        crash of the server or machine may lose the last moments of commits, whole, never part of one."""
        from sqlalchemy.exc import OperationalError

        if check_schema:
            self.ensure_schema()
        try:
            conn = self.engine.connect()
        except OperationalError as exc:
            raise self._unavailable(exc) from exc
        if autocommit:
            with conn.execution_options(isolation_level="AUTOCOMMIT") as reader:
                yield reader
            return
        with conn, conn.begin():
            if not durable:
                from sqlalchemy import text

                conn.execute(text("SET LOCAL synchronous_commit = off"))
            yield conn

    @contextlib.contextmanager
    def cursor(self, *, autocommit: bool = False) -> Iterator[Any]:
        """A DB-API cursor (`%(name)s` parameters, rows as tuples; see `fetch`) in one transaction: committed on
        success, rolled back on any error. For the commands that run a query or two and must start fast (`ltm
        settings …`, search): a plain psycopg2 connection, kept for the next call, with neither SQLAlchemy's
        import (0.1-0.2 s) nor its first-connect queries. The schema is checked as `connect` checks it, with one
        query on the same connection. `autocommit`: no transaction, as `connect(autocommit=True)`."""
        conn, ours = self._raw_connection()
        driver = getattr(conn, "dbapi_connection", conn)  # SQLAlchemy's pooled wrapper: the psycopg2 connection
        if autocommit:
            driver.autocommit = True
        try:
            with conn.cursor() as cur:
                if not self._schema_checked:
                    self._check_schema(cur)
                yield cur
            if not autocommit:
                conn.commit()
        except BaseException:
            try:
                conn.rollback()
                driver.autocommit = False
            except Exception:  # noqa: BLE001 - a broken connection is dropped; the first error is the one raised
                conn.close()
            else:
                self._release(conn, ours)
            raise
        driver.autocommit = False
        self._release(conn, ours)

    def _raw_connection(self) -> tuple[Any, bool]:
        """(connection, True) for a psycopg2 connection of our own; (SQLAlchemy's pooled one, False) for a URL
        only SQLAlchemy reads (see libpq_dsn), so both ways always reach the same server."""
        conn = self._take_idle()
        if conn is not None:
            return conn, True
        target = self._plain_target()
        if target is None:
            from sqlalchemy.exc import OperationalError

            try:
                return self.engine.raw_connection(), False
            except OperationalError as exc:
                raise self._unavailable(exc) from exc
        return self._connect_plain(target), True

    def _plain_target(self) -> dict[str, Any] | None:
        """psycopg2.connect's arguments for this database; None when only SQLAlchemy should read the URL."""
        url = self.url  # starts the embedded server when needed
        if self.is_embedded:
            from ltm_cli.storage.server import DATABASE_NAME, SUPERUSER, EmbeddedServer

            server = EmbeddedServer(self.config.home_path)
            return {"host": str(server.socket_dir), "port": server.port, "user": SUPERUSER, "dbname": DATABASE_NAME}
        dsn = libpq_dsn(url)
        return None if dsn is None else {"dsn": dsn}

    def _connect_plain(self, target: dict[str, Any]) -> Any:
        import psycopg2

        try:
            return psycopg2.connect(**target, **CONNECT_ARGS)
        except psycopg2.OperationalError as exc:
            raise self._unavailable(exc) from exc

    def _take_idle(self) -> Any:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    def _release(self, conn: Any, ours: bool) -> None:
        if ours and not conn.closed:
            self._idle.append(conn)
        elif not ours:
            conn.close()  # back to SQLAlchemy's pool

    def _check_schema(self, cur: Any) -> None:
        """`ensure_schema` in one query when the schema is at head, as it nearly always is; anything else (no
        schema yet, an older one, no permission) goes to ensure_schema, which creates, migrates or refuses."""
        import psycopg2

        try:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
        except psycopg2.OperationalError as exc:
            raise self._unavailable(exc) from exc
        except psycopg2.Error:
            row = None
        if row is not None and row[0] == SCHEMA_HEAD:
            self._schema_checked = True
            return
        cur.connection.rollback()  # holds no lock on alembic_version while ensure_schema migrates
        self.ensure_schema()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold a shared lock while vectors may be written ahead of the rows that use them (ingest, history):
        `ltm db gc` takes it exclusively, so it never deletes a vector a commit is about to reference."""
        from sqlalchemy import text

        self.ensure_schema()
        conn = self.engine.connect()
        try:
            conn.execute(text("SELECT pg_advisory_lock_shared(hashtextextended(:k, 0))"), {"k": WRITERS_LOCK})
            conn.commit()
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock_shared(hashtextextended(:k, 0))"), {"k": WRITERS_LOCK})
                conn.commit()
            finally:
                conn.close()

    def analyze(self, *tables: str) -> None:
        """Refresh planner statistics after a bulk write: the planner's choice of index (HNSW, GIN) and the
        keyword ranker's frequent-lexeme counts both read them, and autovacuum gets there only later."""
        from sqlalchemy import text

        with self.connect() as conn:
            conn.execute(text(f"ANALYZE {', '.join(tables)}"))

    def _unavailable(self, exc: Exception) -> DatabaseUnavailableError:
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()
        where = "the embedded server" if self.is_embedded else mask_url(self.config.database_url or "")
        return DatabaseUnavailableError(
            f"cannot connect to {where}: {detail[0] if detail else exc}",
            hint=None if self.is_embedded else "check LTM_DATABASE_URL and that the server is running",
        )

    # -- schema ------------------------------------------------------------------------------------------
    def current_revision(self) -> str | None:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError, ProgrammingError

        try:
            with self.engine.connect() as conn:
                exists = conn.execute(text("SELECT to_regclass('alembic_version')")).scalar()
                if exists is None:
                    return None
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except OperationalError as exc:
            raise self._unavailable(exc) from exc
        except ProgrammingError as exc:  # pragma: no cover - permissions
            raise SchemaError(f"cannot read the schema version: {exc.orig}") from exc

    def ensure_schema(self) -> None:
        """Create the schema on an empty database; refuse to run on a schema this ltm does not know."""
        if self._schema_checked:
            return
        revision = self.current_revision()
        if revision != SCHEMA_HEAD:
            if revision is not None and not self.is_embedded:
                raise SchemaError(
                    f"the database schema is at revision {revision}, this ltm needs {SCHEMA_HEAD}",
                    hint="run `ltm migrate upgrade` (back up first), or use a matching ltm version",
                )
            self.upgrade("head")
        self._schema_checked = True

    def upgrade(self, revision: str = "head") -> None:
        self._require_vector_extension()
        self._alembic("upgrade", revision)

    def _require_vector_extension(self) -> None:
        """pgvector must be in the database. ltm creates it where it may (the embedded server, a superuser,
        a role allowed to); on managed services an administrator creates it once, and this says exactly how."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError, OperationalError

        try:
            with self.engine.connect() as conn:
                if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).scalar():
                    return
                where = conn.execute(text("SELECT current_database(), current_user")).one()
                available = conn.execute(text(
                    "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).scalar()
                if not available:
                    raise SchemaError(f"the pgvector extension is not installed on this server (database "
                                      f"{where[0]!r})", hint="install pgvector 0.8 on the server, or use a managed "
                                                            "PostgreSQL that offers the `vector` extension")
                conn.rollback()
                try:
                    with conn.begin():
                        conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
                except DBAPIError as exc:
                    if "permission denied" not in str(exc.orig):
                        raise
                    raise SchemaError(
                        f"the vector extension is not enabled in database {where[0]!r}, and role {where[1]!r} may "
                        f"not create it",
                        hint=f"an administrator must run, once: CREATE EXTENSION vector;  (connected to database "
                             f"{where[0]!r}, as a superuser or the service's admin role)") from None
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def downgrade(self, revision: str) -> None:
        self._alembic("downgrade", revision)

    def _alembic(self, command_name: str, revision: str) -> None:
        from alembic import command
        from alembic.util.exc import CommandError
        from sqlalchemy.exc import DBAPIError

        try:
            with self.engine.begin() as conn:
                migration_lock(conn)
                getattr(command, command_name)(alembic_config(conn), revision)
        except CommandError as exc:
            if "locate revision" in str(exc) or "No such revision" in str(exc):
                from ltm_cli.errors import NotFoundError

                raise NotFoundError(f"no migration {revision!r}", hint="`ltm migrate history` lists them") from None
            raise SchemaError(f"migration failed: {exc}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or "could not connect" in str(exc):
                raise self._unavailable(exc) from exc
            raise SchemaError(f"migration failed: {str(exc.orig).strip()}") from exc
        self._schema_checked = False
