"""Notes: remember, revise and forget facts, see why each is believed, find them first in recall."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ltm_cli import Memory
from ltm_cli.embedders.hashing import HashEmbedder
from ltm_cli.errors import ConflictError, InvalidInputError, NotFoundError
from ltm_cli.tools import Caller, call
from tests.conftest import fake_chat_server


@pytest.fixture
def memory(store):
    with Memory.open(store) as m:
        yield m


def test_add_returns_the_existing_note_for_the_same_fact_unless_forced(memory, cli):
    first = memory.notes.add("The user prefers metric units.", about="user", by="agent")
    assert first.created and first.similar == []
    again = memory.notes.add("the user prefers  metric units", about="user")
    assert not again.created and again.note.id == first.note.id
    other_subject = memory.notes.add("The user prefers metric units.", about="team")
    assert other_subject.created
    forced = memory.notes.add("The user prefers metric units.", about="user", force=True)
    assert forced.created and forced.note.id != first.note.id
    different = memory.notes.add("The user's name is Ada.", about="user")
    assert different.created and {s.note.id for s in different.similar} == {first.note.id, forced.note.id}
    done = cli("note", "add", "The user prefers metric units.", "--about", "user", "--json").json()
    assert done["created"] is False and done["note"]["id"] == first.note.id
    assert "already remembered" in cli("note", "add", "The user prefers metric units.", "--about", "user").stderr
    with pytest.raises(InvalidInputError):
        memory.notes.add("  ")
    with pytest.raises(InvalidInputError):
        memory.notes.add("x", about="bad subject!")


def test_supersede_forget_purge_and_time_travel(memory):
    old = memory.notes.add("Deploying service X needs the VPN.", about="project.deploy").note
    time.sleep(0.05)
    middle = dt_now(memory)
    time.sleep(0.05)
    closed, new = memory.notes.supersede(old.id, "Deploying service X needs the VPN and a change ticket.")
    assert (closed.valid_until, closed.superseded_by, closed.closed_reason) == (new.created_at, new.id, "superseded")
    assert new.about == "project.deploy" and new.live
    with pytest.raises(ConflictError):
        memory.notes.supersede(old.id, "again")
    assert [n.id for n in memory.notes.list()] == [new.id]
    assert [n.id for n in memory.notes.list(at=middle)] == [old.id]  # what was believed then
    assert {n.id for n in memory.notes.list(all=True)} == {old.id, new.id}
    detail = memory.notes.show(new.id)
    assert [n.id for n in detail.replaced] == [old.id] and memory.notes.show(old.id).replaced_by[0].id == new.id
    gone = memory.notes.forget(new.id, "the VPN was retired")
    assert gone.closed_reason == "the VPN was retired" and memory.notes.list() == []
    with pytest.raises(InvalidInputError):
        memory.notes.forget(old.id, "")
    memory.notes.forget(new.id, "purge it", purge=True)
    with pytest.raises(NotFoundError):
        memory.notes.show(new.id)
    assert memory.notes.show(old.id).note.superseded_by is None  # the chain loses the purged note only


def dt_now(memory):
    from sqlalchemy import text

    with memory.db.connect() as conn:
        return conn.execute(text("SELECT clock_timestamp()")).scalar()


def test_a_note_shows_where_it_came_from(memory, tmp_path):
    turn = memory.history.add("Use the v2 endpoint with limit at most 100", role="user", conversation="c1")
    (tmp_path / "api.md").write_text("# API\n\nThe v2 endpoint pages results.\n")
    doc = memory.docs.ingest([tmp_path]).files[0].document_id
    note = memory.notes.add("The v2 endpoint rejects limit above 100.", about="api.v2", sources=[turn.message_id],
                            documents=[doc]).note
    sources = memory.notes.show(note.id).sources
    assert [(s.kind, s.id) for s in sources] == [("message", turn.message_id), ("document", doc)]
    assert "limit at most 100" in sources[0].text and sources[0].where == "conversation c1 turn 1"
    with pytest.raises(NotFoundError):
        memory.notes.add("x", sources=[999_999])


def test_search_and_recall_put_live_notes_first_and_hide_closed_ones(memory, tmp_path):
    (tmp_path / "units.md").write_text("# Units\n\n" + "Temperatures in the reports use Fahrenheit degrees. " * 5)
    memory.docs.ingest([tmp_path])
    live = memory.notes.add("The user wants temperatures in Celsius degrees.", about="user").note
    closed = memory.notes.add("The user wants temperatures in Kelvin degrees.", about="user", force=True).note
    memory.notes.forget(closed.id, "user corrected it")
    hits = memory.search("temperatures degrees", kind="notes")
    assert [h.id for h in hits] == [live.id]
    assert {h.id for h in memory.search("temperatures degrees", kind="notes", closed=True)} == {live.id, closed.id}
    assert {h.kind for h in memory.search("temperatures degrees", kind="all", limit=20)} == {"docs", "notes"}
    recalled = memory.recall("what temperature units", budget=300)
    assert recalled.passages[0].kind == "notes" and recalled.passages[0].citation.startswith(f"note {live.id}")
    assert "Kelvin" not in recalled.markdown and "Fahrenheit" in recalled.markdown
    with pytest.raises(InvalidInputError):
        memory.search("x", kind="docs", about="user")


def test_two_processes_adding_the_same_fact_make_one_note(store):
    script = ("from ltm_cli import Memory\nwith Memory.open() as m:\n"
              "    print(m.notes.add('Service Y runs on port 8443.', about='project.y').note.id)\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    ids = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(ids) == 1 and ids != {""}
    with Memory.open(store) as memory:
        assert len(memory.notes.list()) == 1


def test_the_note_tools_remember_supersede_and_forget(memory):
    agent = Caller(name="claude")
    first = call(memory, "remember", {"text": "The user likes short answers.", "about": "user"}, agent).data
    again = call(memory, "remember", {"text": "The user likes short answers", "about": "user"}, agent)
    assert again.data["created"] is False and "already remembered" in again.text
    new = call(memory, "supersede_note", {"note_id": first["note"]["id"], "text": "The user likes detailed answers."},
               agent).data["new"]
    assert new["by"] == "claude"
    hits = call(memory, "memory_search", {"query": "answers", "kind": "notes", "about": "user"}, agent).data["hits"]
    assert [h["id"] for h in hits] == [new["id"]] and hits[0]["citation"] == f"note {new['id']} about user"
    call(memory, "forget_note", {"note_id": new["id"], "reason": "asked to forget"}, agent)
    assert memory.notes.list() == []


# -- distill -----------------------------------------------------------------------------------------------
@pytest.fixture
def chat(monkeypatch):
    """A fake OpenAI-compatible chat server answering with whatever the test scripts (LTM_CHAT_* point at it)."""
    state = {"answer": None, "requests": []}

    def reply(body, headers):
        state["requests"].append(body)
        answer = state["answer"](body) if callable(state["answer"]) else state["answer"]
        return {"role": "assistant", "content": answer}

    with fake_chat_server(reply) as url:
        monkeypatch.setenv("LTM_CHAT_BASE_URL", url)
        monkeypatch.setenv("LTM_CHAT_MODEL", "fake-chat")
        yield state


def _turns(memory):
    ask = memory.history.add("List the invoices, 500 per page", role="user", conversation="c1")
    call_ = memory.history.add("", role="assistant", conversation="c1", tool="list_invoices", args={"limit": 500},
                               result="400 Bad Request: limit must be <= 100", outcome="failure",
                               note="the v2 endpoint caps limit at 100")
    return ask.message_id, call_.message_id


def test_distill_applies_valid_proposals_once(chat, memory, cli):
    ask, failed = _turns(memory)

    def model(body):
        turns = json.loads(body["messages"][1]["content"])["turns"]
        assert [t["id"] for t in turns] == [ask, failed] and turns[1]["outcome"] == "failure"
        assert body["response_format"]["type"] == "json_schema"
        return json.dumps({"proposals": [{"action": "add", "text": "The v2 invoices endpoint rejects limit above "
                                          "100.", "about": "api.v2", "source_message_ids": [failed]},
                                         {"action": "none"}]})

    chat["answer"] = model
    preview = cli("history", "distill", "--dry-run", "--json").json()
    assert len(preview["proposals"]) == 1 and memory.notes.list() == []
    done = cli("history", "distill", "--json")
    assert done.exit_code == 0, done.stderr
    notes = memory.notes.list()
    assert [(n.about, n.source_messages, n.author) for n in notes] == [("api.v2", [failed], "distill:fake-chat")]
    requests = len(chat["requests"])
    again = cli("history", "distill", "--json").json()
    assert again["turns"] == 0 and len(chat["requests"]) == requests and len(memory.notes.list()) == 1


def test_distill_supersedes_a_contradicted_note(chat, memory):
    old = memory.notes.add("The v2 invoices endpoint accepts any limit.", about="api.v2").note
    _, failed = _turns(memory)

    def model(body):
        live = json.loads(body["messages"][1]["content"])["live_notes"]
        assert old.id in [n["id"] for n in live]
        return json.dumps({"proposals": [{"action": "supersede", "note_id": old.id, "text": "The v2 invoices "
                                          "endpoint caps limit at 100.", "source_message_ids": [failed]}]})

    chat["answer"] = model
    summary = memory.history.distill()
    assert summary.proposals[0].applied.startswith(f"superseded note {old.id}")
    (current,) = memory.notes.list()
    assert current.text.endswith("caps limit at 100.") and failed in current.source_messages


@pytest.mark.parametrize("answer", ["not json at all", json.dumps({"notes": []}),
                                    json.dumps({"proposals": [{"action": "add"}]}),
                                    json.dumps({"proposals": [{"action": "supersede", "note_id": 999, "text": "x"}]}),
                                    json.dumps({"proposals": [{"action": "add", "text": "x",
                                                               "source_message_ids": [123456]}]})])
def test_distill_refuses_invalid_model_output_and_writes_nothing(chat, memory, cli, answer):
    _turns(memory)
    chat["answer"] = answer
    done = cli("history", "distill")
    assert done.exit_code == 6 and ("nothing written" in done.stderr or "did not answer with JSON" in done.stderr)
    assert memory.notes.list() == [] and len(memory.history.list(undistilled=True)) == 2


def test_distill_without_a_chat_model_says_how_to_configure_one(cli):
    cli("history", "add", "hello", "-c", "c1")
    done = cli("history", "distill")
    assert done.exit_code == 4 and "LTM_CHAT_BASE_URL" in done.stderr


class _CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def embed(self, texts):
        self.texts += list(texts)
        return super().embed(texts)


def test_recall_embeds_the_query_once_and_notes_take_no_places_from_documents(store, tmp_path):
    """Recall searches notes first, then the rest: one query vector serves both (an OpenAI embedder made two
    requests), and the second search leaves notes out instead of filling its 40 places with them and dropping
    them afterwards."""
    (tmp_path / "zebras.md").write_text("".join(f"# Herd {i}\n\nA zebra herd of the plains, number {i}.\n\n"
                                                for i in range(12)))
    counting = _CountingEmbedder()
    with Memory.open(store, embedder=counting) as memory:
        memory.docs.ingest([tmp_path])
        for i in range(45):
            memory.notes.add(f"zebra fact {i}: zebras have stripes", about=f"zoo.z{i}")
        counting.texts.clear()
        recalled = memory.recall("zebra fact stripes", budget=20000)
    assert counting.texts == ["zebra fact stripes"]
    kinds = [p.kind for p in recalled.passages]
    assert kinds.count("notes") == 5 and kinds.count("docs") >= 1


def test_recall_leaves_out_a_note_that_does_not_match_even_when_it_is_the_only_note(memory):
    """The notes search ran the feedback round, which moves the query towards the best notes themselves: an
    unrelated note's cosine rose past NOTE_MATCH and it led every recall."""
    memory.notes.add("The user prefers metric units.", about="user")
    unrelated = memory.recall("how do I list invoices?", budget=300)
    assert not [p for p in unrelated.passages if p.kind == "notes"]
    related = memory.recall("which units does the user prefer", budget=300)
    assert related.passages and related.passages[0].kind == "notes"
