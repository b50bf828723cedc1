"""The embedded server comes back after faults (issue #11): killed postmaster, stale or garbage lock files,
and a home that is not a directory. Every case goes through the real CLI, as a user would meet it."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import psycopg2
import pytest

from ltm_cli.errors import ExitCode
from ltm_cli.storage.server import EmbeddedServer
from tests.conftest import run_ltm

# The first command after a fault must work: either a command that needs the database, or `ltm db start`.
FIRST_COMMANDS = [("settings", "set", "k", "1"), ("db", "start")]


@pytest.fixture
def home(tmp_path):
    """A home with its own server, started once (initdb included); stopped whatever the test leaves behind."""
    home = tmp_path / "home"
    server = EmbeddedServer(home)
    server.ensure_running()
    yield home
    server.stop()


def _assert_first_command_works(args: tuple[str, ...], home: Path) -> None:
    result = run_ltm(*args, env={"LTM_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    if args[:2] == ("db", "start"):
        # After a fault the server was not running: it must say it started it, with a real pid.
        assert re.search(r"started \(pid \d+,", result.stderr), result.stderr
    info = EmbeddedServer(home).info()
    assert info.running and info.pid is not None


def _leave_stale_socket(server: EmbeddedServer) -> None:
    """A socket file nobody listens on, as a killed postmaster leaves behind."""
    path = server.socket_dir / f".s.PGSQL.{server.port}"
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


@pytest.mark.parametrize("args", FIRST_COMMANDS, ids=lambda a: " ".join(a))
def test_first_command_right_after_sigkill_of_the_postmaster_works(home, args):
    pid = EmbeddedServer(home).info().pid
    os.kill(pid, signal.SIGKILL)  # no waiting: the postmaster may still be a zombie and its children alive
    _assert_first_command_works(args, home)
    assert EmbeddedServer(home).info().pid != pid


@pytest.mark.parametrize("args", FIRST_COMMANDS, ids=lambda a: " ".join(a))
def test_pid_file_naming_an_unrelated_live_process_with_a_stale_socket_is_recovered(home, args):
    server = EmbeddedServer(home)
    server.stop()
    # Our own pid is alive, but it is not a postmaster: only the process's identity can tell.
    (server.data_dir / "postmaster.pid").write_text(
        f"{os.getpid()}\n{server.data_dir}\n0\n{server.port}\n{server.socket_dir}\n\n0 0\nready   \n")
    _leave_stale_socket(server)
    _assert_first_command_works(args, home)


@pytest.mark.parametrize("content", ["garbage\n", ""], ids=["garbage", "empty"])
@pytest.mark.parametrize("args", FIRST_COMMANDS, ids=lambda a: " ".join(a))
def test_unreadable_pid_file_left_by_a_dead_server_is_recovered(home, args, content):
    server = EmbeddedServer(home)
    server.stop()
    (server.data_dir / "postmaster.pid").write_text(content)
    _assert_first_command_works(args, home)


def test_a_live_server_whose_pid_file_is_garbled_keeps_its_files(home):
    server = EmbeddedServer(home)
    pid_file = server.data_dir / "postmaster.pid"
    original = pid_file.read_text()
    pid_file.write_text("garbage\n")
    try:
        result = run_ltm("db", "start", env={"LTM_HOME": str(home)})
        assert result.returncode == ExitCode.DATABASE_UNAVAILABLE, result.stderr
        assert "is using" in result.stderr and str(server.data_dir) in result.stderr
        assert pid_file.read_text() == "garbage\n"
        assert (server.socket_dir / f".s.PGSQL.{server.port}").exists()
        psycopg2.connect(host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres").close()
    finally:
        pid_file.write_text(original)  # lets the fixture stop it (postgres rechecks its lock file each minute)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "Errno" not in stderr
    return lines[0]


def test_ltm_home_that_is_a_file_is_database_unavailable_with_a_clear_message(tmp_path):
    home = tmp_path / "not-a-dir"
    home.write_text("")
    result = run_ltm("settings", "set", "k", "1", env={"LTM_HOME": str(home)})
    assert result.returncode == ExitCode.DATABASE_UNAVAILABLE, result.stderr
    line = _one_error_line(result.stderr)
    assert f"LTM_HOME {home} is not a directory" in line and "point LTM_HOME at a directory" in line


def test_socket_dir_that_is_a_file_is_database_unavailable_with_a_clear_message(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "run").write_text("")
    result = run_ltm("settings", "set", "k", "1", env={"LTM_HOME": str(home)})
    assert result.returncode == ExitCode.DATABASE_UNAVAILABLE, result.stderr
    line = _one_error_line(result.stderr)
    assert f"{home / 'run'} is not a directory" in line and "remove" in line
    assert not (home / "pgdata").exists()  # refused before initdb, not after
