"""What a command costs before it does anything: `ltm settings get` runs on every LLM turn, so it imports no
SQLAlchemy, Rich, NumPy or pydantic; command groups load when invoked; typer's coercion without pydantic
gives typer's values; the plain psycopg2 path checks the schema as the SQLAlchemy one does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltm_cli.cli import app
from ltm_cli.cli.lazy import COMMANDS, PlainValues
from ltm_cli.config import load_config
from ltm_cli.errors import ExitCode
from ltm_cli.storage.engine import SCHEMA_HEAD, Database, libpq_dsn
from ltm_cli.storage.server import EmbeddedServer
from tests.conftest import admin_sql, run_ltm

HEAVY = ("sqlalchemy", "alembic", "rich", "numpy", "pydantic", "onnxruntime", "tokenizers", "mcp")


def _imported(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ltm_cli", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=120)
    modules = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return done, modules


def test_settings_get_imports_no_sqlalchemy_rich_numpy_or_pydantic(cli):
    assert cli("settings", "set", "voice.speed", "1.2").exit_code == 0
    done, modules = _imported("settings", "get", "voice.speed")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1.2\n"
    assert "psycopg2" in modules and "ltm_cli.services.settings" in modules  # the list is read right
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == []


def test_keyword_search_imports_no_sqlalchemy_numpy_or_model(cli, tmp_path):
    """`ltm search --mode keyword` is a hot path too: its queries run on the plain cursor."""
    (tmp_path / "note.md").write_text("# Zebra care\n\nFeed the zebra hay twice a day.\n")
    assert cli("ingest", str(tmp_path)).exit_code == 0
    done, modules = _imported("search", "zebra hay", "--mode", "keyword", "--json", "--kind", "docs")
    assert done.returncode == 0, done.stderr
    assert "Feed the zebra hay" in done.stdout
    assert "ltm_cli.services.search" in modules
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == []


def test_version_imports_no_command_group():
    done, modules = _imported("--version")
    assert done.returncode == 0 and done.stdout.startswith("ltm ")
    assert sorted(m for m in modules if m.startswith(("ltm_cli.cli.", "ltm_cli.services"))) == ["ltm_cli.cli.common",
                                                                                               "ltm_cli.cli.lazy"]


def test_help_lists_every_command_in_order_and_each_one_loads(cli):
    shown = cli("--help").stdout
    positions = [shown.find(f"│ {name} ") for name in COMMANDS]  # the rows of the Commands panel
    assert -1 not in positions and positions == sorted(positions), dict(zip(COMMANDS, positions, strict=True))
    for name in COMMANDS:
        done = cli(name, "--help")
        assert done.exit_code == 0, (name, done.stderr)
        assert f" {name} " in done.stdout


def test_a_mistyped_command_is_answered_with_the_closest_one():
    done = run_ltm("serach", "x")
    assert done.returncode == ExitCode.USAGE
    assert "Did you mean 'search'?" in done.stderr


def _typer_params():
    """Every parameter of the commands most used, with a context, as typer processes them."""
    root = typer.main.get_command(app)
    for name in ("search", "settings", "history", "ingest", "note"):
        command = root.get_command(None, name)
        for sub in [command, *getattr(command, "commands", {}).values()]:
            ctx = typer.main._click.Context(sub)  # type: ignore[attr-defined]
            for param in sub.get_params(ctx):
                if hasattr(param, "type_descriptor"):
                    yield param, ctx


PARAMS = list(_typer_params())
values = st.none() | st.text(max_size=12) | st.integers(-10**6, 10**6) | st.booleans() \
    | st.from_regex(r"[0-9]{1,6}", fullmatch=True) | st.lists(st.text(max_size=6), max_size=3).map(tuple)


def _outcome(coerce, value, param, ctx):
    try:
        return "ok", coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # noqa: BLE001 - the error is part of what must match
        return "error", f"{type(exc).__name__}: {exc}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(PARAMS) - 1), value=values)
def test_plain_coercion_gives_what_typer_gives(index, value):
    from typer._coercion import build_runtime_param

    param, ctx = PARAMS[index]
    ours = _outcome(PlainValues(param.type_descriptor).coerce, value, param, ctx)
    theirs = _outcome(build_runtime_param(param.type_descriptor).coerce, value, param, ctx)
    assert ours == theirs
    if ours[0] == "ok":
        assert type(ours[1]) is type(theirs[1])


def test_plain_coercion_covers_the_common_kinds():
    kinds = {PlainValues(p.type_descriptor).kind for p, _ in PARAMS}
    assert {str, int, list, None} <= kinds  # None: bool, Path, float... left to typer


# -- the plain psycopg2 path ------------------------------------------------------------------------------------
@pytest.fixture
def scratch_url(ltm_home: Path, request: pytest.FixtureRequest):
    name = "startup_" + request.node.name.lower()[:40]
    admin_sql(ltm_home, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_sql(ltm_home, f'CREATE DATABASE "{name}"')
    yield EmbeddedServer(ltm_home).url(name)
    admin_sql(ltm_home, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_settings_get_on_a_database_needing_migration_says_so(scratch_url, cli, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", scratch_url)
    older = cli("migrate", "upgrade", "0004")
    assert older.exit_code == 0, older.stderr
    done = run_ltm("settings", "get", "voice.speed")
    assert done.returncode == ExitCode.DATABASE_UNAVAILABLE, done.stderr
    assert f"schema is at revision 0004, this ltm needs {SCHEMA_HEAD}" in done.stderr
    assert "ltm migrate upgrade" in done.stderr


def test_settings_get_on_an_empty_database_creates_the_schema_first(scratch_url, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", scratch_url)
    done = run_ltm("settings", "get", "voice.speed")
    assert done.returncode == ExitCode.NOT_FOUND, done.stderr
    assert run_ltm("migrate", "current").stdout.strip() == SCHEMA_HEAD


def test_settings_get_when_the_server_is_unreachable_exits_5(monkeypatch, tmp_path):
    monkeypatch.setenv("LTM_DATABASE_URL", f"postgresql://nobody@/ltm?host={tmp_path}&port=1")
    done = run_ltm("settings", "get", "voice.speed")
    assert done.returncode == ExitCode.DATABASE_UNAVAILABLE, done.stderr
    assert "cannot connect to" in done.stderr


def test_cursor_keeps_one_connection_and_rolls_back_on_error():
    db = Database(load_config())
    try:
        with db.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        with pytest.raises(RuntimeError), db.cursor() as cur:
            cur.execute("CREATE TEMP TABLE t_rollback (x int) ON COMMIT PRESERVE ROWS")
            raise RuntimeError("inside the transaction")
        with db.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), to_regclass('pg_temp.t_rollback')")
            assert cur.fetchone() == (pid, None)  # the same connection, and nothing of the failed transaction
    finally:
        db.dispose()
    assert db._idle == []


def test_sqlalchemy_takes_over_the_plain_connection_instead_of_opening_another():
    from sqlalchemy import text

    db = Database(load_config())
    try:
        with db.cursor() as cur:  # as a hybrid search reads the store's embedding space first
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        with db.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        assert db._idle == []
    finally:
        db.dispose()


@pytest.mark.parametrize(("url", "dsn"), [
    ("postgresql+psycopg2://u:p%40ss@db.example:5433/mem?sslmode=require",
     "postgresql://u:p%40ss@db.example:5433/mem?sslmode=require"),
    ("postgresql+psycopg2://postgres@/ltm?host=/run/x&port=5432", "postgresql://postgres@/ltm?host=/run/x&port=5432"),
    ("postgresql+psycopg2://u@/db?host=h1:5432&host=h2:5432", None),  # SQLAlchemy's multi-host form
    ("postgresql+psycopg2://u@h/db?options=-c+statement_timeout%3D5", None),  # '+' means a space to SQLAlchemy only
    ("postgresql+asyncpg://u@h/db", None),
])
def test_libpq_reads_only_the_urls_it_reads_as_sqlalchemy_does(url, dsn):
    assert libpq_dsn(url) == dsn


def test_a_url_only_sqlalchemy_reads_goes_through_sqlalchemy(scratch_url, monkeypatch):
    # '+' is a space to SQLAlchemy's query parsing and a plus to libpq's: the plain path must not read this URL.
    monkeypatch.setenv("LTM_DATABASE_URL", scratch_url + "&options=-c+statement_timeout%3D5000")
    assert run_ltm("settings", "set", "voice.speed", "1.2").returncode == 0
    done = run_ltm("settings", "get", "voice.speed")
    assert (done.returncode, done.stdout) == (0, "1.2\n"), done.stderr
