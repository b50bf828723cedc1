"""examples/agent_loop.py against a local fake chat-completions server that scripts the model's tool calls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
