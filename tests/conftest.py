"""One real embedded PostgreSQL for the whole test session; each test gets its own store."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ltm_cli.cli import app
from ltm_cli.storage.server import EmbeddedServer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_counter = itertools.count()


@pytest.fixture(scope="session")
def ltm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ltm-home")
    server = EmbeddedServer(home)
    server.ensure_running()
    yield home
    server.stop()


@pytest.fixture(autouse=True)
def _isolated_env(ltm_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test: the session's server, the hash embedder, no user config file, a store of its own."""
    for name in list(os.environ):
        if name.startswith("LTM_") or name in ("OPENAI_API_KEY",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LTM_HOME", str(ltm_home))
    monkeypatch.setenv("LTM_EMBEDDER", "hash")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40] + f"-{next(_counter)}"
    monkeypatch.setenv("LTM_STORE", name)
    return name


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli(store: str):
    """Run the real CLI in-process with Typer's CliRunner; stdout and stderr kept apart."""
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, env: dict | None = None) -> Result:
        result = runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


def run_ltm(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 120):
    """Run `ltm` as a separate process, as a user would."""
    return subprocess.run([sys.executable, "-m", "ltm_cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=timeout)


def admin_sql(ltm_home: Path, sql: str, dbname: str = "postgres") -> None:
    """Run SQL as the embedded server's superuser (databases, roles, extensions the tests set up)."""
    import psycopg2

    server = EmbeddedServer(ltm_home)
    conn = psycopg2.connect(host=str(server.socket_dir), port=server.port, user="postgres", dbname=dbname)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@contextlib.contextmanager
def local_http_server(answer: Callable[[str, bytes, Any], tuple[int, bytes]]) -> Iterator[str]:
    """A local HTTP server for what lies outside the machine (a model's API): `answer(path, body, headers)`
    gives (status, JSON bytes) for each POST. Yields the base URL (…/v1)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            status, data = answer(self.path, self.rfile.read(int(self.headers["Content-Length"])), self.headers)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()


@contextlib.contextmanager
def fake_chat_server(reply: Callable[[dict, Any], dict]) -> Iterator[str]:
    """A local OpenAI-compatible chat-completions server: `reply(request body, headers)` gives the assistant
    message. Yields the base URL (…/v1). Only what is outside the machine is faked: the model."""

    def answer(path: str, body: bytes, headers: Any) -> tuple[int, bytes]:
        assert path == "/v1/chat/completions", path
        message = reply(json.loads(body), headers)
        return 200, json.dumps({"choices": [{"index": 0, "message": message}]}).encode()

    with local_http_server(answer) as url:
        yield url
