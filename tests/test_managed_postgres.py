"""A managed PostgreSQL (RDS, Cloud SQL, Supabase, Neon): ltm runs as a role that is not a superuser, in a
database where an administrator created the vector extension once."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltm_cli.storage.server import EmbeddedServer
from tests.conftest import admin_sql as _admin
from tests.conftest import run_ltm

ROLE = "ltm_app"


@pytest.fixture
def managed(ltm_home: Path):
    """(url with the extension pre-created, url without it), both as a plain role owning its database."""
    names = ("managed_with_vector", "managed_without_vector")
    _admin(ltm_home, f"DROP DATABASE IF EXISTS {names[0]} WITH (FORCE)")
    _admin(ltm_home, f"DROP DATABASE IF EXISTS {names[1]} WITH (FORCE)")
    _admin(ltm_home, f"DROP ROLE IF EXISTS {ROLE}")
    _admin(ltm_home, f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    for name in names:
        _admin(ltm_home, f"CREATE DATABASE {name} OWNER {ROLE}")
        _admin(ltm_home, f"REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT ALL ON SCHEMA public TO {ROLE}", name)
    _admin(ltm_home, "CREATE EXTENSION vector", names[0])  # what the administrator runs once
    server = EmbeddedServer(ltm_home)
    urls = tuple(server.url(name).replace("postgres@", f"{ROLE}@", 1) for name in names)
    assert all(f"{ROLE}@" in url for url in urls), urls
    yield urls
    for name in names:
        _admin(ltm_home, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(ltm_home, f"DROP ROLE IF EXISTS {ROLE}")


def test_everything_works_as_a_plain_role_with_the_extension_pre_created(managed, store, tmp_path):
    env = {"LTM_DATABASE_URL": managed[0]}
    (tmp_path / "install.md").write_text("# Install\n\nRun the installer, then restart the service.\n")

    def ltm(*args: str):
        done = run_ltm(*args, env=env)
        assert done.returncode == 0, (args, done.stderr)
        return done

    ltm("db", "init")
    ltm("settings", "set", "voice.speed", "1.2")
    assert ltm("settings", "get", "voice.speed").stdout.strip() == "1.2"
    ltm("ingest", str(tmp_path / "install.md"))
    assert "restart the service" in ltm("search", "install", "--json").stdout
    ltm("history", "add", "deploy failed", "-c", "c1", "--outcome", "failure")
    assert "deploy failed" in ltm("history", "search", "deploy", "--outcome", "failure").stdout
    ltm("db", "gc", "--dry-run")
    ltm("db", "status")


def test_a_missing_extension_says_what_the_administrator_must_run(managed, store):
    done = run_ltm("db", "init", env={"LTM_DATABASE_URL": managed[1]})
    assert done.returncode == 5, done.stderr
    assert "CREATE EXTENSION vector" in done.stderr and "managed_without_vector" in done.stderr
