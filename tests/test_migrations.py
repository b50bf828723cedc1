"""Migrations and models agree: `alembic check` finds nothing to autogenerate, on an empty and a used database."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from ltm_cli.storage.engine import alembic_config, create_engine_for, migration_lock
from ltm_cli.storage.server import EmbeddedServer
from tests.conftest import SHARED_DATA
from tests.conftest import admin_sql as _admin

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def scratch_url(ltm_home: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of its own on the session's server, dropped afterwards."""
    name = "check_" + request.node.name.lower().replace("[", "_").replace("]", "")[:40]
    _admin(ltm_home, f'DROP DATABASE IF EXISTS "{name}"')
    _admin(ltm_home, f'CREATE DATABASE "{name}"')
    yield EmbeddedServer(ltm_home).url(name)
    _admin(ltm_home, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _check_with_plain_alembic(url: str) -> None:
    """`alembic check` from the repository root, as the documented workflow runs it."""
    done = subprocess.run([sys.executable, "-m", "alembic", "check"], cwd=REPO,
                          env={**os.environ, "LTM_DATABASE_URL": url}, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "No new upgrade operations detected" in output


def _check_through_ltm(url: str) -> None:
    """The same comparison through ltm's own path (env.py handed a connection); warnings count as drift, since
    Alembic only warns when, say, a computed column's expression differs."""
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn, warnings.catch_warnings():
            warnings.simplefilter("error")
            migration_lock(conn)
            cfg = alembic_config(conn)
            cfg.stdout = io.StringIO()  # Alembic's default is the sys.stdout of import time, maybe closed since
            command.check(cfg)
    finally:
        engine.dispose()
    assert "No new upgrade operations detected" in cfg.stdout.getvalue()


def test_fresh_database_at_head_matches_the_models(scratch_url, cli, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", scratch_url)
    up = cli("migrate", "upgrade", "head")
    assert up.exit_code == 0, up.stderr
    _check_with_plain_alembic(scratch_url)
    _check_through_ltm(scratch_url)


def test_database_with_data_and_hnsw_indexes_matches_the_models(scratch_url, cli, monkeypatch):
    monkeypatch.setenv("LTM_DATABASE_URL", scratch_url)
    ingested = cli("ingest", str(SHARED_DATA / "markdown" / "SOURCE.md"))
    assert ingested.exit_code == 0, ingested.stderr
    assert cli("settings", "set", "voice.speed", "1.2").exit_code == 0
    added = cli("history", "add", "deploy the staging server", "--new")
    assert added.exit_code == 0, added.stderr
    engine = create_engine_for(scratch_url)
    with engine.connect() as conn:
        hnsw = conn.execute(text("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'embeddings_hnsw_space_%'"))
        assert hnsw.scalar() >= 1
    engine.dispose()
    _check_with_plain_alembic(scratch_url)
    _check_through_ltm(scratch_url)
