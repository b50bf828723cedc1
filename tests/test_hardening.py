"""Hostile input, one behaviour per test: bounded resources, files that fail alone, right codes and messages."""

from __future__ import annotations

import os

import pytest

from tests.conftest import run_ltm


@pytest.mark.parametrize("url", [
    "postgresql://ltm:hunter2secret@127.0.0.1:1/ltm",
    "postgresql://ltm@127.0.0.1:1/ltm?password=hunter2secret&sslmode=disable",
    "postgresql://ltm@127.0.0.1:1/ltm?sslpassword=hunter2secret&connect_timeout=2",
])
def test_no_password_form_is_ever_printed(cli, url):
    shown = cli("config", "show", "--json", env={"LTM_DATABASE_URL": url})
    assert shown.exit_code == 0 and "hunter2secret" not in shown.stdout and "****" in shown.stdout
    failed = cli("db", "status", env={"LTM_DATABASE_URL": url})
    assert failed.exit_code == 5 and "hunter2secret" not in failed.stdout + failed.stderr
