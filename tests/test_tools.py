"""The tools as an LLM calls them: the loose JSON models send, inputs that mean nothing, results sized for a
context window, and memory_search choosing its kind from the filters given."""

from __future__ import annotations

import json

import pytest

from ltm_cli import Memory
from ltm_cli.errors import InvalidInputError, NotFoundError
from ltm_cli.tools import CONTEXT_CHARS, GET_CHARS, QUOTE_CHARS, TEXT_CHARS, VALUE_CHARS, Caller, call


@pytest.fixture
def memory(store):
    with Memory.open(store) as m:
        yield m


def _turns(memory, *contents: str) -> tuple[str, list[int]]:
    first = call(memory, "log_turn", {"role": "user", "content": contents[0]}).data
    ids = [first["message_id"]]
    for content in contents[1:]:
        ids.append(call(memory, "log_turn", {"conversation": first["conversation"], "role": "assistant",
                                             "content": content}).data["message_id"])
    return first["conversation"], ids


# -- whole-number floats are integers -------------------------------------------------------------------------
def test_whole_number_floats_work_wherever_an_integer_is_expected(memory, cli):
    conversation, ids = _turns(memory, "deploy prod", "deploy staging", "deploy dev")
    assert len(call(memory, "history_search", {"query": "deploy", "limit": 2.0, "context": 0.0}).data["hits"]) == 2
    assert len(call(memory, "memory_search", {"query": "deploy", "kind": "history", "limit": 2.0}).data["hits"]) == 2
    recalled = call(memory, "memory_recall", {"query": "deploy", "budget": 500.0}).data
    assert recalled["budget"] == 500 and type(recalled["budget"]) is int
    done = call(memory, "record_outcome", {"message_id": float(ids[1]), "outcome": "failure"}).data
    assert done["message_id"] == ids[1]
    note = call(memory, "remember", {"text": "Deploys need the VPN.", "source_messages": [float(ids[0])]}).data
    assert note["note"]["source_messages"] == [ids[0]]
    new = call(memory, "supersede_note", {"note_id": float(note["note"]["id"]), "text": "Deploys need a ticket."})
    assert new.data["old"]["id"] == note["note"]["id"]
    r = cli("tools", "call", "history_search", "--args", '{"query": "deploy", "limit": 1.0}')
    assert r.exit_code == 0 and len(r.json()["hits"]) == 1, r.stderr


def test_a_fractional_number_is_still_refused_where_an_integer_is_expected(memory):
    with pytest.raises(InvalidInputError, match="limit"):
        call(memory, "history_search", {"query": "deploy", "limit": 2.5})


# -- null for an optional field ----------------------------------------------------------------------------------
def test_null_for_an_optional_field_means_the_field_was_left_out(memory):
    started = call(memory, "log_turn", {"role": "user", "content": "deploy prod", "conversation": None,
                                        "name": None, "outcome": None, "note": None}).data
    assert started["new_conversation"] is True
    hits = call(memory, "memory_search", {"query": "deploy", "kind": None, "mode": None, "limit": None,
                                          "source": None, "tags": None, "since": None, "role": None,
                                          "about": None, "include_toc": None}).data["hits"]
    assert hits == []  # kind left out and no filter given: documents, of which there are none
    assert call(memory, "history_search", {"query": "deploy", "outcome": None}).data["hits"][0]["id"] \
        == started["message_id"]


def test_null_stays_a_value_where_the_schema_allows_it_and_an_error_where_the_field_is_required(memory):
    call(memory, "settings_set", {"key": "voice.speed", "value": None, "note": None})
    assert call(memory, "settings_get", {"key": "voice.speed", "at": None}).data == {"key": "voice.speed",
                                                                                      "value": None}
    turn = call(memory, "log_turn", {"role": "assistant", "tool_name": "deploy", "arguments": None,
                                     "result": None}).data
    assert turn["seq"] == 1
    for name, args in (("settings_get", {"key": None}), ("remember", {"text": None}),
                       ("log_turn", {"role": None, "content": "hello"})):
        with pytest.raises(InvalidInputError, match="None is not of type"):
            call(memory, name, args)


# -- inputs that record nothing, or junk ------------------------------------------------------------------------
@pytest.mark.parametrize("args", [{"role": "user"}, {"role": "user", "content": ""},
                                  {"role": "assistant", "content": "  \n", "outcome": "success"},
                                  {"role": "tool", "result": "", "arguments": None}])
def test_a_turn_with_nothing_to_record_is_refused_and_starts_no_conversation(memory, args):
    with pytest.raises(InvalidInputError, match="nothing to record"):
        call(memory, "log_turn", args)
    assert memory.history.conversations() == []


def test_a_pure_tool_call_turn_is_recorded_without_content(memory):
    turn = call(memory, "log_turn", {"role": "assistant", "tool_name": "deploy", "arguments": {"env": "prod"}}).data
    assert memory.history.show(turn["conversation"])[1][0].tool_name == "deploy"


@pytest.mark.parametrize("path", ["", "   "])
def test_a_blank_path_is_refused_instead_of_ingesting_the_whole_allowed_directory(memory, tmp_path, path):
    (tmp_path / "secret.md").write_text("# Secret\n\nNot meant to be ingested.\n")
    with pytest.raises(InvalidInputError, match="paths/0"):
        call(memory, "docs_ingest", {"paths": [path]}, Caller(allowed_paths=(tmp_path.resolve(),)))
    assert memory.docs.list() == []


@pytest.mark.parametrize("name, args", [
    ("remember", {"text": "The user prefers tea.", "tags": [""]}),
    ("remember", {"text": "The user prefers tea.", "tags": [" "]}),
    ("remember", {"text": "The user prefers tea.", "about": ""}),
    ("docs_ingest", {"paths": ["a.md"], "tags": [""]}),
    ("log_turn", {"role": "user", "content": "hi", "conversation": ""}),
    ("log_turn", {"role": "user", "content": "hi", "conversation": " "}),
    ("log_turn", {"role": "assistant", "tool_name": ""}),
    ("settings_set", {"key": "voice.speed", "value": 1, "note": ""}),
    ("settings_list", {"prefix": ""}),
    ("settings_history", {"key": ""}),
    ("settings_get", {"key": "voice.speed", "at": ""}),
    ("memory_search", {"query": "deploy", "source": ""}),
    ("memory_search", {"query": "deploy", "tags": [""]}),
    ("memory_search", {"query": "deploy", "since": " "}),
    ("memory_search", {"query": "   "}),
    ("history_search", {"query": "deploy", "conversation": ""}),
    ("docs_list", {"tag": ""}),
    ("docs_list", {"source": ""}),
    ("record_outcome", {"message_id": 1, "outcome": "success", "note": ""}),
])
def test_a_blank_string_is_refused_rather_than_read_as_everything_or_stored(memory, tmp_path, name, args):
    (tmp_path / "a.md").write_text("# A\n\nText.\n")
    with pytest.raises(InvalidInputError, match="non-empty|must not be blank"):
        call(memory, name, args, Caller(allowed_paths=(tmp_path.resolve(),)))
    assert memory.notes.list() == [] and memory.docs.list() == [] and memory.settings.list() == []


# -- result sizes --------------------------------------------------------------------------------------------------
def test_a_huge_turn_comes_back_cut_with_where_to_read_it_whole(memory):
    huge = "deploy log line. " * 18_000  # about 300 KB
    conversation, ids = _turns(memory, "deploy prod please", huge, "deploy finished")
    tool_id = call(memory, "log_turn", {"conversation": conversation, "role": "assistant", "tool_name": "deploy",
                                        "arguments": {"log": huge}, "result": huge}).data["message_id"]
    result = call(memory, "history_search", {"query": "deploy", "limit": 4})
    assert len(json.dumps(result.data)) < 60_000 and len(result.text) < 30_000
    hits = {h["id"]: h for h in result.data["hits"]}
    cut = hits[ids[1]]["text"]
    assert cut.startswith(huge[:TEXT_CHARS]) and f"{len(huge) - TEXT_CHARS:,} more characters" in cut
    assert f"history_show with conversation {conversation} and seq 2" in cut
    whole = call(memory, "history_show", {"conversation": conversation, "seq": 2.0}).data["turns"]
    assert [t["content"] for t in whole] == [huge]  # the cut turn, read whole
    latest = call(memory, "history_show", {"conversation": conversation}).data
    assert latest["turns_in_conversation"] == 4 and [t["seq"] for t in latest["turns"]] == [1, 2, 3, 4]
    assert len(json.dumps(latest)) < 4 * TEXT_CHARS + 8_000  # each turn cut, with where to read it whole
    with pytest.raises(NotFoundError):
        call(memory, "history_show", {"conversation": conversation, "seq": 99})
    neighbour = next(t for t in hits[ids[0]]["context"] if t["id"] == ids[1])
    assert len(neighbour["content"]) < CONTEXT_CHARS + 200 and "more characters" in neighbour["content"]
    tool_turn = next(t for t in hits[ids[2]]["context"] if t["id"] == tool_id)
    assert len(tool_turn["tool_result"]) < CONTEXT_CHARS + 200 and len(tool_turn["tool_args"]) < CONTEXT_CHARS + 200
    assert tool_turn["tool_args"].startswith('{"log": "deploy log line.')


def test_a_long_note_comes_back_cut_wherever_a_tool_returns_it(memory):
    long = "The deploy checklist says: " + "check the VPN, " * 1000
    note = memory.notes.add(long, about="project.deploy").note
    hit = call(memory, "memory_search", {"query": "deploy checklist", "about": "project"}).data["hits"][0]
    assert hit["text"].startswith(long[:TEXT_CHARS]) and f"ltm note show {note.id}" in hit["text"]
    done = call(memory, "supersede_note", {"note_id": note.id, "text": "The deploy checklist is gone."}).data
    assert len(done["old"]["text"]) < TEXT_CHARS + 200 and done["new"]["text"] == "The deploy checklist is gone."


def test_a_short_hit_is_returned_whole(memory):
    conversation, ids = _turns(memory, "deploy prod please")
    hit = call(memory, "history_search", {"query": "deploy"}).data["hits"][0]
    assert hit["text"] == "deploy prod please" and hit["context"][0]["content"] == "deploy prod please"


def test_settings_tools_echo_a_huge_value_by_its_size_and_settings_get_returns_it_when_asked(memory):
    huge = "x" * 2_000_000
    done = call(memory, "settings_set", {"key": "prompts.system", "value": huge}).data
    assert "value" not in done and done["value_chars"] == len(huge) + 2 and len(json.dumps(done)) < 2 * VALUE_CHARS
    for name, args in (("settings_list", {}), ("settings_history", {"key": "prompts.system"})):
        result = call(memory, name, args)
        assert len(json.dumps(result.data)) < 2 * VALUE_CHARS and "settings_get" in result.text, name
    with pytest.raises(InvalidInputError, match="2,000,002 characters") as refused:
        call(memory, "settings_get", {"key": "prompts.system"})
    assert "whole" in refused.value.hint
    assert call(memory, "settings_get", {"key": "prompts.system", "whole": True}).data["value"] == huge
    below = "y" * (GET_CHARS - 10)
    call(memory, "settings_set", {"key": "prompts.short", "value": below})
    assert call(memory, "settings_get", {"key": "prompts.short"}).data["value"] == below
    reverted = call(memory, "settings_revert", {"key": "prompts.system", "to_version": 1.0}).data
    assert "value" not in reverted and reverted["changed"] is False


def test_an_argument_error_quotes_only_the_start_of_a_huge_value(memory):
    with pytest.raises(InvalidInputError) as error:
        call(memory, "remember", {"text": "a" * 20_001})
    message = str(error.value)
    assert len(message) < QUOTE_CHARS + 150 and "20,001 characters" in message and "too long" in message
    with pytest.raises(InvalidInputError) as error:
        call(memory, "settings_get", {"key": ["k"] * 10_000})
    assert len(str(error.value)) < QUOTE_CHARS + 150


def test_an_unknown_tool_with_a_huge_name_is_named_briefly(memory):
    with pytest.raises(Exception, match="no tool") as error:
        call(memory, "x" * 100_000, {})
    assert len(str(error.value)) < QUOTE_CHARS + 100


# -- memory_search infers its kind ------------------------------------------------------------------------------
def test_memory_search_with_a_history_filter_searches_history(memory):
    conversation, ids = _turns(memory, "deploy prod please", "deploying now")
    call(memory, "record_outcome", {"message_id": ids[1], "outcome": "failure", "note": "VPN was down"})
    hits = call(memory, "memory_search", {"query": "deploy", "outcome": "failure"}).data["hits"]
    assert [(h["kind"], h["id"]) for h in hits] == [("history", ids[1])]
    hits = call(memory, "memory_search", {"query": "deploy", "conversation": conversation}).data["hits"]
    assert {h["id"] for h in hits} == set(ids)


def test_memory_search_with_about_searches_notes(memory):
    note = call(memory, "remember", {"text": "The user prefers metric units.", "about": "user"}).data["note"]
    hits = call(memory, "memory_search", {"query": "metric units", "about": "user"}).data["hits"]
    assert [(h["kind"], h["id"]) for h in hits] == [("notes", note["id"])]


@pytest.mark.parametrize("args, message", [
    ({"kind": "docs", "outcome": "failure"}, "outcome filters history, not docs"),
    ({"kind": "notes", "source": "*.md"}, "source filters docs, not notes"),
    ({"source": "*.md", "outcome": "failure"}, "different kinds"),
    ({"kind": "all", "about": "user", "role": "user"}, "different kinds"),
])
def test_memory_search_refuses_filters_of_another_kind_than_asked(memory, args, message):
    with pytest.raises(InvalidInputError, match=message):
        call(memory, "memory_search", {"query": "deploy", **args})
