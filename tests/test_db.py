"""The foundation: init, status, migrations, the embedded server's life cycle, external URLs, exit codes."""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest

from ltm_cli.config import load_config
from ltm_cli.errors import ExitCode
from ltm_cli.storage.engine import SCHEMA_HEAD, Database, alembic_config
from ltm_cli.storage.server import EmbeddedServer
from tests.conftest import run_ltm


def test_db_init_is_idempotent_and_reports_head(cli):
    first = cli("db", "init", "--json")
    second = cli("db", "init", "--json")
    assert first.exit_code == 0, first.stderr
    assert second.exit_code == 0, second.stderr
    assert second.json()["revision"] == SCHEMA_HEAD
    assert second.json()["at_head"] is True


def test_status_reports_postgres_18_and_pgvector_0_8(cli):
    cli("db", "init")
    status = cli("db", "status", "--json")
    assert status.exit_code == 0, status.stderr
    data = status.json()
    assert data["server"] == "embedded"
    assert data["server_version_num"] >= 180000
    major, minor = (int(x) for x in data["pgvector_version"].split(".")[:2])
    assert (major, minor) >= (0, 8)


def test_schema_head_constant_matches_alembic_head():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [SCHEMA_HEAD]


def _scratch_database(ltm_home: Path, name: str) -> str:
    server = EmbeddedServer(ltm_home)
    conn = psycopg2.connect(host=str(server.socket_dir), port=server.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return server.url(name)


def test_migrations_round_trip_on_a_database_with_data(ltm_home, cli, monkeypatch):
    url = _scratch_database(ltm_home, "roundtrip")
    monkeypatch.setenv("LTM_DATABASE_URL", url)
    assert cli("migrate", "upgrade").exit_code == 0
    assert cli("settings", "set", "voice.speed", "1.2").exit_code == 0
    down = cli("migrate", "downgrade", "base", "--yes")
    assert down.exit_code == 0, down.stderr
    assert cli("migrate", "current", "--json").json()["revision"] is None
    up = cli("migrate", "upgrade", "head")
    assert up.exit_code == 0, up.stderr
    assert cli("migrate", "current").stdout.strip() == SCHEMA_HEAD
    assert cli("settings", "set", "voice.speed", "1.3").exit_code == 0
    assert cli("settings", "get", "voice.speed").stdout.strip() == "1.3"


def test_plain_alembic_uses_the_same_url_resolution(ltm_home, monkeypatch, tmp_path):
    import subprocess
    import sys

    url = _scratch_database(ltm_home, "plainalembic")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LTM_DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    db = Database(load_config(environ=env))
    assert db.current_revision() == SCHEMA_HEAD
    db.dispose()


def test_downgrade_without_yes_and_without_a_terminal_is_refused(cli):
    result = cli("migrate", "downgrade", "base")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "--yes" in result.stderr


def test_two_processes_starting_a_fresh_home_at_once_share_one_server(tmp_path):
    home = tmp_path / "fresh"
    env = {"LTM_HOME": str(home)}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_ltm("db", "status", "--json", env=env), range(2)))
    try:
        for result in results:
            assert result.returncode == 0, result.stderr
        assert not list(home.glob("pgdata.init-*"))
        info = EmbeddedServer(home).info()
        assert info.running
    finally:
        EmbeddedServer(home).stop()


def test_server_killed_with_sigkill_is_recovered_on_next_command(tmp_path):
    home = tmp_path / "killed"
    env = {"LTM_HOME": str(home)}
    assert run_ltm("db", "start", env=env).returncode == 0
    server = EmbeddedServer(home)
    pid = server.info().pid
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    try:
        result = run_ltm("db", "status", "--json", env=env)
        assert result.returncode == 0, result.stderr
        assert server.info().running
        assert server.info().pid != pid
    finally:
        server.stop()


def test_stale_pid_file_of_an_unrelated_process_is_recovered(tmp_path):
    home = tmp_path / "stale"
    server = EmbeddedServer(home)
    server.ensure_running()
    server.stop()
    pid_file = server.data_dir / "postmaster.pid"
    # pid 1 is alive but is not our postmaster: postgres itself would refuse to start.
    pid_file.write_text(f"1\n{server.data_dir}\n0\n5432\n{server.socket_dir}\n\n0 0\nready\n")
    try:
        result = run_ltm("db", "status", env={"LTM_HOME": str(home)})
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()


def test_db_stop_then_any_command_starts_it_again(tmp_path):
    env = {"LTM_HOME": str(tmp_path / "restart")}
    assert run_ltm("db", "start", env=env).returncode == 0
    stopped = run_ltm("db", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stderr
    assert run_ltm("db", "stop", env=env).stderr.strip().endswith("not running")
    assert run_ltm("settings", "set", "a", "1", env=env).returncode == 0
    EmbeddedServer(tmp_path / "restart").stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def external_server(tmp_path_factory):
    """A second server on a TCP port with a password, standing in for a managed PostgreSQL."""
    port = _free_port()
    server = EmbeddedServer(tmp_path_factory.mktemp("external"), port=port, listen_addresses="127.0.0.1")
    server.ensure_running()
    conn = psycopg2.connect(host=str(server.socket_dir), port=port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER USER postgres PASSWORD 's3cret-pw'")
    conn.close()
    yield port
    server.stop()


def test_external_url_mode_works_and_never_prints_the_password(cli, external_server, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", f"postgresql://postgres:s3cret-pw@127.0.0.1:{external_server}/ltm")
    init = cli("db", "init")
    status = cli("db", "status", "--json")
    shown = cli("config", "show", "--json")
    assert init.exit_code == 0, init.stderr
    assert status.exit_code == 0, status.stderr
    assert status.json()["server"] == "external"
    for result in (init, status, shown):
        assert "s3cret-pw" not in result.stdout + result.stderr
    assert "****" in status.json()["url"]


def test_wrong_password_exits_database_unavailable(cli, external_server, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", f"postgresql://postgres:wrong@127.0.0.1:{external_server}/ltm")
    result = cli("db", "status")
    assert result.exit_code == ExitCode.DATABASE_UNAVAILABLE
    assert "wrong" not in result.stderr
    assert result.stderr.startswith("error:")


def test_unreachable_server_exits_database_unavailable(cli, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{_free_port()}/ltm")
    result = cli("settings", "get", "x")
    assert result.exit_code == ExitCode.DATABASE_UNAVAILABLE
    assert "Traceback" not in result.stderr


def test_db_start_with_an_external_url_is_invalid_input(cli, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/ltm")
    result = cli("db", "start")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "external" in result.stderr


def test_unknown_command_is_a_usage_error(cli):
    assert cli("no-such-command").exit_code == ExitCode.USAGE


def test_config_show_reports_sources(cli, monkeypatch, tmp_path):
    config_file = tmp_path / "ltm.toml"
    config_file.write_text('chunk_tokens = 300\nstore = "from-file"\n')
    monkeypatch.setenv("LTM_CONFIG", str(config_file))
    monkeypatch.delenv("LTM_STORE")
    rows = {r["name"]: r for r in cli("--store", "from-flag", "config", "show", "--json").json()}
    assert rows["chunk_tokens"]["value"] == 300 and rows["chunk_tokens"]["source"].startswith("file")
    assert rows["store"]["value"] == "from-flag" and rows["store"]["source"] == "flag"
    assert rows["embedder"]["source"] == "env LTM_EMBEDDER"


def test_unknown_key_in_config_file_is_invalid_input(cli, monkeypatch, tmp_path):
    config_file = tmp_path / "bad.toml"
    config_file.write_text("chunk_tokenz = 3\n")
    monkeypatch.setenv("LTM_CONFIG", str(config_file))
    result = cli("config", "show")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "chunk_tokenz" in result.stderr
