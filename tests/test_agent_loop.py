"""examples/agent_loop.py against a local fake chat-completions server that scripts the model's tool calls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ltm_cli.errors import LtmError
from tests.conftest import fake_chat_server

ROOT = Path(__file__).resolve().parents[1]
MANUAL = ("# Widget 3000 manual\n\n## Resetting\n\nHold the power button for ten seconds until the light blinks "
          "orange; the widget then restarts with factory settings.\n\n## Cleaning\n\nWipe with a dry cloth.\n")


def _tool_call(name: str, arguments: dict, n: int) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}


def scripted_model(request: dict) -> dict:
    """What a model would do: pick a tool from the question, then answer from the tool's result."""
    messages = request["messages"]
    assert request["tools"] and all(t["type"] == "function" for t in request["tools"])
    question = next(m["content"] for m in messages if m["role"] == "user")
    tool_results = [m["content"] for m in messages if m["role"] == "tool"]
    if "faster" in question:
        if not tool_results:
            return _tool_call("settings_set", {"key": "voice.speed", "value": 1.2, "note": "user: faster"}, 1)
        return {"role": "assistant", "content": "Done: I will speak faster now."}
    if "typo" in question:
        if not tool_results:
            return _tool_call("settings_get", {"key": "voice.sped"}, 1)
        return {"role": "assistant", "content": f"That failed: {tool_results[-1]}"}
    if not tool_results:
        return _tool_call("memory_search", {"query": question, "limit": 2}, 1)
    first = re.search(r"^\[1\] (.+)$", tool_results[-1], re.M).group(1)
    return {"role": "assistant", "content": f"Hold the power button for ten seconds. [source: {first}]"}


@pytest.fixture
def chat_server():
    seen: list[dict] = []

    def reply(body, headers):
        assert headers["Authorization"] == "Bearer k"
        seen.append(body)
        return scripted_model(body)

    with fake_chat_server(reply) as url:
        yield url, seen


def _agent():
    import importlib.util

    spec = importlib.util.spec_from_file_location("agent_loop", ROOT / "examples" / "agent_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agent_changes_its_setting_and_logs_the_tool_call(store, chat_server, cli):
    url, seen = chat_server
    from ltm_cli import Memory

    with Memory.open(store) as memory:
        answer, conversation = _agent().run(memory, "Please speak faster", base_url=url, model="fake", api_key="k")
        assert answer.startswith("Done")
        assert memory.settings.get("voice.speed") == 1.2
        assert memory.settings.history("voice.speed")[0].author == "agent_loop:fake"
        _, turns = memory.history.show(conversation)
    assert [(t.role, t.tool_name, t.outcome) for t in turns] == [
        ("user", None, None), ("assistant", "settings_set", "success"), ("assistant", None, None)]
    assert turns[1].tool_args == {"key": "voice.speed", "value": 1.2, "note": "user: faster"}
    assert '"version": 1' in turns[1].tool_result
    # the next conversation's system prompt carries the active setting
    with Memory.open(store) as memory:
        _agent().run(memory, "Please speak faster", base_url=url, model="fake", api_key="k")
    assert '"voice.speed": 1.2' in seen[-2]["messages"][0]["content"]


def test_a_failed_tool_call_is_logged_as_a_failure_with_its_reason(store, chat_server):
    url, _ = chat_server
    from ltm_cli import Memory

    with Memory.open(store) as memory:
        answer, conversation = _agent().run(memory, "fix the typo", base_url=url, model="fake", api_key="k")
        assert "not found" in answer
        failures = memory.history.search("settings_get voice", outcome="failure")
    assert failures[0].tool_name == "settings_get" and "not found" in failures[0].outcome_note


def test_agent_answers_from_a_stored_manual_with_a_citation(store, chat_server, tmp_path):
    url, _ = chat_server
    (tmp_path / "widget.md").write_text(MANUAL)
    from tests.conftest import run_ltm

    assert run_ltm("ingest", str(tmp_path / "widget.md")).returncode == 0
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "agent_loop.py"), "How do I reset the widget?"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "LTM_CHAT_BASE_URL": url, "LTM_CHAT_MODEL": "fake",
                               "LTM_CHAT_API_KEY": "k"})
    assert done.returncode == 0, done.stderr
    assert "[source: Widget 3000 manual — Widget 3000 manual > Resetting]" in done.stdout


# -- failures: the chat endpoint, the tools -----------------------------------------------------------------
def _run_example(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "examples" / "agent_loop.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env={**os.environ, **(env or {})})


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _status_server(status: int, body: str):
    """A chat endpoint that answers every request with `status` and `body`: an overloaded or misconfigured one."""
    from tests.conftest import local_http_server

    return local_http_server(lambda path, request, headers: (status, body.encode()))


def _one_conversation(memory) -> list:
    conversations = memory.history.conversations()
    assert len(conversations) == 1
    return memory.history.show(conversations[0].id)[1]


def test_without_a_chat_model_configured_it_names_the_variables_to_set_exit_4_and_logs_nothing(store):
    done = _run_example("How do I reset the widget?")
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    error = done.stderr.splitlines()[0]
    assert error.startswith("error: ") and "LTM_CHAT_BASE_URL" in error and "LTM_CHAT_MODEL" in error
    from ltm_cli import Memory

    with Memory.open(store) as memory:
        assert memory.history.list() == []


def test_an_unreachable_chat_endpoint_is_one_line_and_exit_6(store):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    done = _run_example("How do I reset the widget?", env={"LTM_CHAT_BASE_URL": url, "LTM_CHAT_MODEL": "fake"})
    assert done.returncode == 6, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: chat model fake at {url} could not be reached")


def test_an_endpoint_answering_an_error_is_exit_6_and_the_unanswered_turn_records_why(store):
    with _status_server(401, '{"error": "invalid api key"}') as url:
        done = _run_example("How do I reset the widget?", env={"LTM_CHAT_BASE_URL": url, "LTM_CHAT_MODEL": "fake"})
    assert done.returncode == 6, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: chat model fake at") and "HTTP 401" in done.stderr
    assert "LTM_CHAT_API_KEY" in done.stderr  # the hint: what to set for a refused key
    from ltm_cli import Memory

    with Memory.open(store) as memory:
        [turn] = _one_conversation(memory)
    assert (turn.role, turn.content, turn.outcome) == ("user", "How do I reset the widget?", "failure")
    assert "no answer" in turn.outcome_note and "HTTP 401" in turn.outcome_note


def test_a_model_failing_after_a_tool_call_keeps_the_call_and_fails_the_users_turn(store):
    def reply(body, headers):
        if any(m["role"] == "tool" for m in body["messages"]):
            raise RuntimeError("the model crashed")  # the server drops the connection
        return _tool_call("settings_set", {"key": "voice.speed", "value": 1.2}, 1)

    from ltm_cli import Memory

    with fake_chat_server(reply) as url, Memory.open(store) as memory:
        with pytest.raises(LtmError) as raised:
            _agent().run(memory, "Please speak faster", base_url=url, model="fake")
        assert raised.value.exit_code == 6
        assert memory.settings.get("voice.speed") == 1.2
        turns = _one_conversation(memory)
    assert [(t.role, t.tool_name, t.outcome) for t in turns] == [
        ("user", None, "failure"), ("assistant", "settings_set", "success")]
    assert "could not be reached" in turns[0].outcome_note


def _one_bad_call_then_answer(name: str, arguments: str):
    def reply(body, headers):
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not results:
            return {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]}
        return {"role": "assistant", "content": f"Sorry: {results[-1]}"}

    return reply


def test_a_call_to_an_unknown_tool_logs_its_parsed_arguments(store):
    from ltm_cli import Memory

    with fake_chat_server(_one_bad_call_then_answer("no_such_tool", '{"query": "x", "limit": 2}')) as url, \
            Memory.open(store) as memory:
        answer, conversation = _agent().run(memory, "look it up", base_url=url, model="fake")
        _, turns = memory.history.show(conversation)
    assert "no tool 'no_such_tool'" in answer and "memory_search" in answer  # the hint names the real tools
    assert (turns[1].tool_name, turns[1].outcome) == ("no_such_tool", "failure")
    assert turns[1].tool_args == {"query": "x", "limit": 2}


def test_tool_arguments_that_are_not_json_are_logged_raw_and_marked(store):
    from ltm_cli import Memory

    with fake_chat_server(_one_bad_call_then_answer("memory_search", '{"query": "x",')) as url, \
            Memory.open(store) as memory:
        answer, conversation = _agent().run(memory, "look it up", base_url=url, model="fake")
        _, turns = memory.history.show(conversation)
    assert "not JSON" in answer
    assert turns[1].tool_args == {"unparsed_arguments": '{"query": "x",'}
    assert turns[1].outcome == "failure" and "not JSON" in turns[1].outcome_note


def test_a_tool_raising_an_unexpected_error_is_a_failed_result_and_the_run_goes_on(store, monkeypatch):
    agent = _agent()
    real_call = agent.call

    def buggy_call(memory, name, arguments, caller):
        if name == "memory_search":
            raise TypeError("'float' object cannot be interpreted as an integer")  # as a user saw from limit=2.0
        return real_call(memory, name, arguments, caller)

    monkeypatch.setattr(agent, "call", buggy_call)
    from ltm_cli import Memory

    with fake_chat_server(_one_bad_call_then_answer("memory_search", '{"query": "x", "limit": 2.0}')) as url, \
            Memory.open(store) as memory:
        answer, conversation = agent.run(memory, "look it up", base_url=url, model="fake")
        _, turns = memory.history.show(conversation)
    assert "TypeError" in answer
    assert [(t.role, t.tool_name, t.outcome) for t in turns] == [
        ("user", None, None), ("assistant", "memory_search", "failure"), ("assistant", None, None)]
    assert turns[1].tool_args == {"query": "x", "limit": 2.0} and "TypeError" in turns[1].outcome_note


def test_a_dry_run_prints_the_request_without_a_model_and_logs_nothing(store):
    done = _run_example("How do I reset the widget?", "--dry-run")
    assert done.returncode == 0, done.stderr
    request = json.loads(done.stdout)
    assert request["messages"][-1] == {"role": "user", "content": "How do I reset the widget?"}
    assert "memory_search" in [t["function"]["name"] for t in request["tools"]]
    from ltm_cli import Memory

    with Memory.open(store) as memory:
        assert memory.history.list() == []
