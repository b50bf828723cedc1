"""`ltm mcp` driven by the official SDK's client, over stdio and streamable HTTP, as an LLM host would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp")
import mcp.types as types  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402

TOKEN = "test-token-0123456789abcdef"
PROSE = ("# Deploying service X\n\nConnect the VPN first, then run `deploy --env prod`. The deploy fails with "
         "error E42 when the VPN is down.\n")


def _params(*args: str) -> StdioServerParameters:
    # The SDK starts the server with a minimal environment: pass the test's (LTM_HOME, LTM_STORE, …).
    return StdioServerParameters(command=sys.executable, args=["-m", "ltm_cli", "mcp", *args],
                                 env=dict(os.environ), cwd=str(Path(__file__).resolve().parents[1]))


def _client(target, mode: str = "auto") -> Client:
    return Client(target, mode=mode, client_info=types.Implementation(name="pytest-agent", version="1"))


def _text(result) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def test_an_mcp_client_drives_all_three_kinds_of_memory_over_stdio(store, cli, tmp_path):
    (tmp_path / "deploy.md").write_text(PROSE)

    async def scenario():
        async with _client(_params("--allow-path", str(tmp_path))) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"settings_get", "settings_set", "settings_list", "settings_history", "settings_revert",
                             "memory_search", "memory_recall", "log_turn", "record_outcome", "history_search",
                             "history_show", "remember", "supersede_note", "forget_note", "docs_list",
                             "docs_ingest"}
            # settings: set with a note, read, history records the client's name, revert
            r = await client.call_tool("settings_set", {"key": "voice.speed", "value": 1.2, "note": "user asked"})
            assert not r.is_error and r.structured_content["version"] == 1
            await client.call_tool("settings_set", {"key": "voice.speed", "value": 1.5})
            r = await client.call_tool("settings_get", {"key": "voice.speed"})
            assert r.structured_content == {"key": "voice.speed", "value": 1.5}
            r = await client.call_tool("settings_history", {"key": "voice.speed"})
            first = r.structured_content["versions"][0]
            assert (first["value"], first["note"], first["by"]) == (1.2, "user asked", "pytest-agent")
            r = await client.call_tool("settings_revert", {"key": "voice.speed"})
            assert r.structured_content["value"] == 1.2
            r = await client.call_tool("settings_list", {})
            assert [s["key"] for s in r.structured_content["settings"]] == ["voice.speed"]
            # documents: ingest under the allowed root, list, search with a citation
            r = await client.call_tool("docs_ingest", {"paths": ["deploy.md"], "tags": ["ops"]})
            assert not r.is_error and r.structured_content["added"] == 1, _text(r)
            r = await client.call_tool("docs_list", {})
            doc = r.structured_content["documents"][0]
            assert doc["tags"] == ["ops"] and doc["source"].endswith("deploy.md")
            r = await client.call_tool("memory_search", {"query": "VPN deploy error", "limit": 3})
            hit = r.structured_content["hits"][0]
            assert "VPN" in hit["text"] and hit["citation"].startswith("Deploying service X")
            assert "[1] Deploying service X" in _text(r)
            # conversations: log a tool call that failed, record the outcome later, find it again
            r = await client.call_tool("log_turn", {"role": "user", "content": "Deploy service X to prod"})
            conversation = r.structured_content["conversation"]
            r = await client.call_tool("log_turn", {"conversation": conversation, "role": "assistant",
                                                    "content": "Deploying", "tool_name": "deploy",
                                                    "arguments": {"env": "prod"}, "result": {"error": "E42"}})
            message_id = r.structured_content["message_id"]
            r = await client.call_tool("record_outcome", {"message_id": message_id, "outcome": "failure",
                                                          "note": "VPN was down"})
            assert r.structured_content["outcome"] == "failure"
            r = await client.call_tool("history_search", {"query": "deploy prod", "outcome": "failure"})
            hits = r.structured_content["hits"]
            assert [h["id"] for h in hits] == [message_id] and hits[0]["outcome_note"] == "VPN was down"
            assert "VPN was down" in _text(r) and "E42" in _text(r)
            r = await client.call_tool("memory_recall", {"query": "deploy service X", "budget": 400})
            assert "## [1]" in r.structured_content["markdown"] and r.structured_content["tokens"] <= 400
            # resources and the prompt
            settings = await client.read_resource("ltm://settings")
            assert settings.contents[0].text.replace(" ", "").replace("\n", "") == '{"voice.speed":1.2}'
            document = await client.read_resource(f"ltm://documents/{doc['id']}")
            assert "Connect the VPN first" in document.contents[0].text
            prompt = await client.get_prompt("with-memory", {"question": "How do I deploy service X?"})
            body = prompt.messages[0].content.text
            assert '"voice.speed": 1.2' in body and "Connect the VPN first" in body

    _run(scenario)
    # the same store, seen from the CLI
    assert cli("settings", "get", "voice.speed").stdout.strip() == "1.2"


def test_tool_errors_carry_the_cli_message_and_the_server_lives_on(store, cli, tmp_path):
    outside = tmp_path / "outside"
    allowed = tmp_path / "allowed"
    outside.mkdir()
    allowed.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nThe launch code is 0000.\n")
    (allowed / "link.md").symlink_to(outside / "secret.md")
    (allowed / "inner").mkdir()
    (allowed / "inner" / "ok.md").write_text(PROSE)
    cli_error = cli("settings", "get", "no.such.key").stderr.splitlines()[0].removeprefix("error: ")

    async def scenario():
        async with _client(_params("--allow-path", str(allowed)), mode="legacy") as client:
            r = await client.call_tool("settings_get", {"key": "no.such.key"})
            assert r.is_error and _text(r) == cli_error
            assert r.structured_content["exit_code"] == 3
            r = await client.call_tool("settings_get", {"key": 5})
            assert r.is_error and "invalid arguments for settings_get" in _text(r)
            r = await client.call_tool("settings_set", {"key": "bad key!", "value": 1})
            assert r.is_error and "invalid setting key" in _text(r)
            r = await client.call_tool("record_outcome", {"message_id": 999999, "outcome": "success"})
            assert r.is_error and "no message 999999" in _text(r)
            r = await client.call_tool("memory_search", {"query": "x", "limit": 100000})
            assert r.is_error and "limit" in _text(r)
            r = await client.call_tool("no_such_tool", {})
            assert r.is_error and "no tool 'no_such_tool'" in _text(r)
            for escape in ("../outside/secret.md", str(outside), "link.md", "inner/../../outside"):
                r = await client.call_tool("docs_ingest", {"paths": [escape]})
                assert r.is_error and "outside the allowed directories" in _text(r), escape
            # a directory walk inside the root skips the link that leads out of it
            r = await client.call_tool("docs_ingest", {"paths": ["."]})
            statuses = {Path(d["source"]).name: d["status"] for d in r.structured_content["documents"]}
            assert statuses == {"ok.md": "added", "secret.md": "skipped"}, statuses
            r = await client.call_tool("memory_search", {"query": "launch code", "mode": "keyword"})
            assert r.structured_content["hits"] == []
            r = await client.call_tool("settings_get", {"key": "still.missing"})  # still serving
            assert r.is_error

    _run(scenario)


def test_read_only_serves_only_tools_that_do_not_write(store):
    async def scenario():
        async with _client(_params("--read-only", "--allow-path", ".")) as client:
            tools = (await client.list_tools()).tools
            assert {t.name for t in tools} == {"settings_get", "settings_list", "settings_history",
                                               "memory_search", "memory_recall", "history_search", "history_show",
                                               "docs_list"}
            assert all(t.annotations.read_only_hint for t in tools)
            r = await client.call_tool("settings_set", {"key": "a", "value": 1})
            assert r.is_error and "read-only" in _text(r)

    _run(scenario)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def http_server(store):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ltm_cli", "mcp", "--http", f"127.0.0.1:{port}"],
                            env={**os.environ, "LTM_MCP_TOKEN": TOKEN}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    proc.terminate()
    proc.wait(timeout=20)


def _http_client(url: str, headers: dict[str, str]):
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60))
    return http, _client(streamable_http_client(url, http_client=http))


def test_http_needs_the_token_and_serves_two_clients_at_once(http_server):
    import httpx2

    async def session(n: int) -> list:
        http, client = _http_client(http_server, {"Authorization": f"Bearer {TOKEN}"})
        async with http, client:
            got = []
            for i in range(5):
                r = await client.call_tool("settings_set", {"key": f"client{n}.k{i}", "value": i})
                got.append(r.structured_content["version"])
            return got

    async def scenario():
        results = {}

        async def run(n):
            results[n] = await session(n)

        async with anyio.create_task_group() as group:
            group.start_soon(run, 1)
            group.start_soon(run, 2)
        assert results == {1: [1] * 5, 2: [1] * 5}
        # no token, a wrong token, a foreign Origin: refused before any tool runs
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx2.AsyncClient() as raw:
            assert (await raw.post(http_server, json=body, headers=headers)).status_code == 401
            wrong = headers | {"Authorization": "Bearer nope"}
            assert (await raw.post(http_server, json=body, headers=wrong)).status_code == 401
            evil = headers | {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
            assert (await raw.post(http_server, json=body, headers=evil)).status_code == 403

    _run(scenario)


def test_http_on_a_public_address_requires_a_token(store):
    from tests.conftest import run_ltm

    env = {k: v for k, v in os.environ.items() if k != "LTM_MCP_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "ltm_cli", "mcp", "--http", f"0.0.0.0:{_free_port()}"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4 and "without a token" in done.stderr
    assert "on http://" not in done.stderr  # refused before the banner claims it serves there
    bad = run_ltm("mcp", "--http", "localhost:99999")
    assert bad.returncode == 4 and "[HOST:]PORT" in bad.stderr
