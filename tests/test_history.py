"""Conversation memory through the real CLI and a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import SHARED_DATA, run_ltm


def _new(cli, text: str = "hello", *extra: str) -> str:
    result = cli("history", "add", "--new", text, *extra)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def test_add_new_then_append_keeps_order_and_prints_ids(cli):
    conv = _new(cli, "Please deploy the web app to staging", "--title", "deploy")
    second = cli("history", "add", "-c", conv, "--role", "assistant", "Deploying now")
    assert second.exit_code == 0, second.stderr
    assert second.stdout.strip().isdigit()
    shown = cli("history", "show", conv, "--json").json()
    assert shown["conversation"]["title"] == "deploy"
    assert [(m["seq"], m["role"], m["content"]) for m in shown["messages"]] == [
        (1, "user", "Please deploy the web app to staging"), (2, "assistant", "Deploying now")]
    assert shown["messages"][1]["id"] == int(second.stdout)
    human = cli("history", "show", conv)
    assert "Deploying now" in human.stdout and "deploy" in human.stdout


def test_conversation_named_by_the_caller_is_made_on_first_use(cli, monkeypatch):
    assert cli("history", "add", "-c", "ticket-42", "first").exit_code == 0
    monkeypatch.setenv("LTM_CONVERSATION", "ticket-42")
    assert cli("history", "add", "--role", "assistant", "second").exit_code == 0
    listed = cli("history", "conversations", "--json").json()
    assert [(c["id"], c["messages"]) for c in listed] == [("ticket-42", 2)]


def test_add_needs_a_conversation_or_new(cli):
    result = cli("history", "add", "orphan")
    assert result.exit_code == 4
    assert "--conversation" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--role", "wizard", "x"], "unknown role"),
    (["--tool", "kubectl", "--args", "{not json", "x"], "--args is not valid JSON"),
    (["--outcome", "great", "x"], "unknown outcome"),
    (["a\x00b"], "NUL"),
])
def test_bad_input_is_refused_with_exit_4_and_nothing_written(cli, args, message):
    result = cli("history", "add", "-c", "c1", *args)
    assert result.exit_code == 4
    assert message in result.stderr
    assert cli("history", "conversations", "--json").json() == []


def test_large_unicode_content_round_trips_byte_for_byte(cli):
    text = ("Grüße 👋🏽 — 東京 \u200d\r\n\ttabs  and  spaces \U0001F9EA " * 4000)[:150_000]
    conv = _new(cli, "start")
    added = cli("history", "add", "-c", conv, "-", input=text.encode("utf-8"))
    assert added.exit_code == 0, added.stderr
    messages = cli("history", "show", conv, "--json").json()["messages"]
    assert messages[1]["content"] == text


def test_tool_call_with_outcome_recorded_later_and_filtered(cli):
    conv = _new(cli, "Deploy to staging")
    tool = cli("history", "add", "-c", conv, "--role", "assistant", "--tool", "kubectl",
               "--args", '{"cmd": "apply -f web.yaml"}', "--result", "error: connection refused", "Deploying")
    message_id = tool.stdout.strip()
    assert cli("history", "list", "--outcome", "failure", "--json").json() == []
    marked = cli("history", "outcome", message_id, "failure", "--note", "cluster VPN was down")
    assert marked.exit_code == 0, marked.stderr
    failures = cli("history", "list", "--outcome", "failure", "--json").json()
    assert [(m["id"], m["tool_name"], m["tool_args"], m["outcome_note"]) for m in failures] == [
        (int(message_id), "kubectl", {"cmd": "apply -f web.yaml"}, "cluster VPN was down")]
    assert cli("history", "outcome", "999999999", "success").exit_code == 3


def test_search_sees_a_message_as_soon_as_add_returns(cli):
    conv = _new(cli, "Let's plan the trip")
    cli("history", "add", "-c", conv, "--role", "assistant", "Booked the ferry to Hydra for Tuesday morning")
    cli("history", "add", "-c", conv, "Great, thanks")
    hits = cli("history", "search", "ferry Hydra", "--json").json()
    assert hits[0]["text"] == "Booked the ferry to Hydra for Tuesday morning"
    assert [t["seq"] for t in hits[0]["context"]] == [1, 2, 3]  # one turn either side by default
    vector = cli("history", "search", "Booked the ferry to Hydra for Tuesday morning", "--mode", "vector",
                 "--json").json()
    assert vector[0]["seq"] == 2


def test_outcome_filter_answers_what_went_wrong_last_time(cli):
    for outcome, text in [("success", "Restarted nginx with systemctl"), ("failure", "Restarted nginx via docker"),
                          ("success", "Restarted postgres")]:
        cli("history", "add", "-c", "ops", "--role", "assistant", "--outcome", outcome, text)
    hits = cli("history", "search", "restart nginx", "--outcome", "failure", "--json").json()
    assert [h["text"] for h in hits] == ["Restarted nginx via docker"]
    everything = cli("search", "restart nginx", "--kind", "history", "--json").json()
    assert len(everything) == 3


def test_import_jsonl_is_idempotent_reports_bad_lines_and_appends_growth(cli, tmp_path):
    good = {"id": "chat-1", "messages": [{"role": "user", "content": "What is the capital of France?"},
                                         {"role": "assistant", "content": "Paris."}]}
    other = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    lines = [json.dumps(good), "{broken json", json.dumps({"messages": [{"role": "wizard", "content": "x"}]}),
             "", json.dumps(other)]
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(lines) + "\n")
    first = cli("history", "import", str(path))
    assert first.exit_code == 1
    assert f"{path}:2:" in first.stderr and f"{path}:3:" in first.stderr and "unknown role" in first.stderr
    assert "2 added" in first.stderr
    again = cli("history", "import", str(path), "--json")
    summary = again.json()
    assert [c["status"] for c in summary["conversations"]] == ["unchanged", "unchanged"]
    assert summary["messages"] == 0
    good["messages"].append({"role": "user", "content": "And of Italy?"})
    path.write_text(json.dumps(good) + "\n")
    grown = cli("history", "import", str(path), "--json").json()
    assert grown["conversations"][0]["status"] == "appended" and grown["messages"] == 1
    assert [m["content"] for m in cli("history", "show", "chat-1", "--json").json()["messages"]][-1] == \
        "And of Italy?"
    good["messages"][0]["content"] = "changed history"
    path.write_text(json.dumps(good) + "\n")
    conflict = cli("history", "import", str(path))
    assert conflict.exit_code == 1 and "differs from the stored conversation" in conflict.stderr


def test_openai_tool_calls_import_and_export_round_trip(cli, tmp_path, monkeypatch):
    chat = {"id": "tools-1", "title": "weather", "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                              "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 °C, snow"},
        {"role": "assistant", "content": [{"type": "text", "text": "It is -3 °C and snowing."}],
         "outcome": "success"}]}
    path = tmp_path / "chat.json"
    path.write_text(json.dumps(chat, ensure_ascii=False))
    assert cli("history", "import", str(path)).exit_code == 0
    messages = cli("history", "show", "tools-1", "--json").json()["messages"]
    assert (messages[1]["tool_name"], messages[1]["tool_args"]) == ("get_weather", {"city": "Oslo"})
    assert messages[2]["tool_name"] == "get_weather" and messages[2]["content"] == "-3 °C, snow"
    assert messages[3]["content"] == "It is -3 °C and snowing." and messages[3]["outcome"] == "success"
    exported = cli("history", "export")
    assert exported.exit_code == 0
    line = json.loads(exported.stdout)
    assert line["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    out = tmp_path / "export.jsonl"
    out.write_text(exported.stdout)
    monkeypatch.setenv("LTM_STORE", "round-trip-target")
    assert cli("history", "import", str(out)).exit_code == 0
    assert cli("history", "export").stdout == exported.stdout
    assert cli("history", "import", str(out), "--json").json()["messages"] == 0


def test_transcript_import_joins_continuation_lines(cli, tmp_path):
    path = tmp_path / "talk.txt"
    path.write_text("preamble without a role\nUser: how do I undo a commit?\nAssistant (git-bot): use\n"
                    "git revert HEAD\nuser: thanks\n")
    result = cli("history", "import", str(path))
    assert result.exit_code == 1 and f"{path}:1:" in result.stderr
    conv = cli("history", "conversations", "--json").json()[0]["id"]
    messages = cli("history", "show", conv, "--json").json()["messages"]
    assert [(m["role"], m["name"], m["content"]) for m in messages] == [
        ("user", None, "how do I undo a commit?"), ("assistant", "git-bot", "use\ngit revert HEAD"),
        ("user", None, "thanks")]


def test_prune_deletes_whole_old_conversations_only_when_confirmed(cli, tmp_path):
    old = {"id": "old", "messages": [{"role": "user", "content": "ancient", "created_at": "2020-01-01T00:00:00Z"},
                                     {"role": "assistant", "content": "yes", "created_at": "2020-01-02T00:00:00Z"}]}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    cli("history", "import", str(path))
    cli("history", "add", "-c", "recent", "fresh")
    dry = cli("history", "prune", "--before", "2021-01-01", "--dry-run", "--json").json()
    assert [c["id"] for c in dry["conversations"]] == ["old"]
    refused = cli("history", "prune", "--before", "2021-01-01")
    assert refused.exit_code == 4 and "--yes" in refused.stderr
    assert cli("history", "prune", "--before", "2021-01-01", "--yes").exit_code == 0
    assert [c["id"] for c in cli("history", "conversations", "--json").json()] == ["recent"]
    assert cli("history", "list", "--json").json()[0]["content"] == "fresh"


def test_rm_and_list_filters(cli):
    cli("history", "add", "-c", "a", "--role", "user", "one")
    cli("history", "add", "-c", "a", "--role", "assistant", "two")
    cli("history", "add", "-c", "b", "--role", "user", "three", "--at", "2024-05-01T10:00:00Z")
    assert [m["content"] for m in cli("history", "list", "--role", "user", "--json").json()] == ["three", "one"]
    assert [m["content"] for m in cli("history", "list", "--until", "2025-01-01", "--json").json()] == ["three"]
    assert [m["content"] for m in cli("history", "list", "-c", "a", "--limit", "1", "--json").json()] == ["two"]
    assert cli("history", "rm", "a").exit_code == 4  # no terminal, no --yes
    assert cli("history", "rm", "a", "--yes").exit_code == 0
    assert cli("history", "show", "a").exit_code == 3
    assert cli("history", "list", "-c", "nope").exit_code == 3


def test_concurrent_writers_to_one_conversation_get_contiguous_turns(store, tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "ltm_cli", "history", "add", "-c", "busy", f"writer {i}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(5)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    shown = run_ltm("history", "show", "busy", "--json")
    seqs = [m["seq"] for m in json.loads(shown.stdout)["messages"]]
    assert seqs == [1, 2, 3, 4, 5]


def test_messages_are_re_embedded_for_a_new_embedding_space(cli, monkeypatch):
    cli("history", "add", "-c", "x", "the blue heron nests by the lake")
    monkeypatch.setenv("LTM_EMBEDDING_DIMENSIONS", "64")
    assert cli("history", "search", "the blue heron nests by the lake", "--mode", "vector", "--json").json() == []
    assert cli("history", "embed", "--json").json() == {"embedded": 1}
    assert cli("history", "search", "the blue heron nests by the lake", "--mode", "vector", "--json").json()


@pytest.mark.skipif(not (SHARED_DATA / "locomo").exists(), reason="shared data not present")
def test_real_long_conversation_imports_and_finds_its_evidence(cli, tmp_path):
    from bench.conversations import to_openai

    sample = json.loads((SHARED_DATA / "locomo" / "26.json").read_text())
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps(to_openai(sample)))
    result = cli("history", "import", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    turns = sum(len(v) for k, v in sample.items() if k.startswith("session_") and isinstance(v, list))
    assert result.json()["messages"] == turns
    # Keyword retrieval is deterministic: at least half the single-hop questions find a gold turn in the top 10
    # (the benchmark measures the rest; this guards against a regression that breaks ranking outright).
    questions = [q for q in sample["qa"] if q.get("category") == 4][:30]
    found = 0
    for qa in questions:
        hits = cli("history", "search", qa["question"], "--mode", "keyword", "-n", "10", "--context", "0",
                   "--json").json()
        found += bool(set(qa["evidence"]) & {h["metadata"].get("dia_id") for h in hits})
    assert found / len(questions) >= 0.5


def test_the_turn_after_a_matching_question_ranks_near_it(cli):
    """Neighbour smoothing: the answer shares no word with the query, yet follows the turn that matches."""
    turns = [("user", "What is the wifi password at the cabin?"), ("assistant", "It is moose-2024, on the fridge."),
             ("user", "The cabin roof leaks again."), ("assistant", "I booked a roofer for Monday."),
             ("user", "We painted the cabin door green."), ("assistant", "Nice colour choice.")]
    for role, text in turns:
        cli("history", "add", "-c", "cabin", "--role", role, text)
    hits = cli("history", "search", "wifi password cabin", "--context", "0", "--json").json()
    assert [h["seq"] for h in hits[:2]] == [1, 2]


def test_recall_of_history_shows_the_tool_call_and_how_it_ended(cli):
    conv = _new(cli, "Deploy the web app to staging")
    cli("history", "add", "-c", conv, "--role", "assistant", "--tool", "kubectl", "--args", '{"cmd": "apply"}',
        "--result", "error: connection refused", "--outcome", "failure", "--note", "VPN down", "Deploying now")
    block = cli("recall", "deploy web app staging", "--kind", "history", "--json").json()["markdown"]
    assert '→ `kubectl({"cmd": "apply"})` ← error: connection refused _(outcome: failure — VPN down)_' in block
    assert "Deploy the web app to staging" in block


def test_an_empty_conversation_id_is_refused_not_read_as_every_conversation(cli):
    assert cli("history", "add", "first", "-c", "c1").exit_code == 0
    assert cli("history", "add", "second", "-c", "c2").exit_code == 0
    for args in (("history", "add", "x", "-c", ""), ("history", "list", "-c", " "), ("history", "export", "-c", ""),
                 ("search", "x", "--kind", "history", "--conversation", "")):
        result = cli(*args)
        assert result.exit_code == 4 and "empty conversation id" in result.stderr, args
        assert result.stdout == ""
    assert len(cli("history", "conversations", "--json").json()) == 2  # nothing was started by the refused add


def test_recall_takes_the_conversation_filter_as_search_does(cli):
    assert cli("history", "add", "The deploy to staging failed on a missing secret.", "-c", "deploys").exit_code == 0
    assert cli("history", "add", "The deploy to production went fine.", "-c", "other").exit_code == 0
    result = cli("recall", "deploy", "--conversation", "deploys", "--json")
    assert result.exit_code == 0, result.stderr
    passages = result.json()["passages"]
    assert passages and {p["conversation_id"] for p in passages} == {"deploys"}


def test_recall_keeps_its_budget_with_a_turn_of_one_endless_word(cli):
    """WordPiece reads a word over 100 characters as one token: a 100,000-character hex dump counted as a
    few tokens and came back whole under a 100-token budget."""
    dump = "0123456789abcdef" * 6250
    assert cli("history", "add", f"firmware image dump: {dump}", "-c", "hex", "--role", "assistant").exit_code == 0
    result = cli("recall", "firmware image dump", "--budget", "100", "--json")
    assert result.exit_code == 0, result.stderr
    recalled = result.json()
    assert recalled["tokens"] <= 100 and len(recalled["markdown"]) < 100 * 4 + 400
    assert "firmware image dump: 0123456789abcdef" in recalled["markdown"]  # its start, cut inside the word
