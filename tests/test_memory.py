"""The Python API: `Memory` round trips for each kind of memory, and `ltm tools`."""

from __future__ import annotations

import json

import pytest

from ltm_cli import Memory
from ltm_cli.errors import EmbeddingError, InvalidInputError, NotFoundError


@pytest.fixture
def memory(store):
    with Memory.open(store) as m:
        yield m


def test_memory_open_resolves_configuration_as_the_cli_does(store, monkeypatch, tmp_path):
    monkeypatch.setenv("LTM_CHUNK_TOKENS", "80")
    with Memory.open() as m:
        assert (m.store_name, m.config.embedder_name, m.config.chunk_tokens) == (store, "hash", 80)
    with Memory.open("other-store", embedder="hash", chunk_tokens=128) as m:
        assert (m.store_name, m.config.chunk_tokens) == ("other-store", 128)
    with pytest.raises(InvalidInputError):
        Memory.open("bad name!")


def test_settings_round_trip_through_memory(memory, cli):
    assert memory.settings.set("voice.speed", 1.2, note="faster please", by="agent").changed
    assert not memory.settings.set("voice.speed", 1.2).changed
    memory.settings.set("voice.speed", 1.5)
    memory.settings.set("persona.tone", "warm")
    assert memory.settings.get("voice.speed") == 1.5
    assert memory.settings.get("voice") == {"speed": 1.5}
    assert memory.settings.get("missing.key", default=None) is None
    with pytest.raises(NotFoundError):
        memory.settings.get("missing.key")
    assert [(v.version, v.value, v.author) for v in memory.settings.history("voice.speed")] == [
        (1, 1.2, "agent"), (2, 1.5, None)]
    assert memory.settings.revert("voice.speed").value == 1.2
    assert memory.settings.export() == {"persona.tone": "warm", "voice.speed": 1.2}
    assert memory.settings.unset("persona", recursive=True) == ["persona.tone"]
    assert memory.settings.import_({"a.b": [1, 2]}).added == ["a.b"]
    assert [v.key for v in memory.settings.list()] == ["a.b", "voice.speed"]
    assert cli("settings", "get", "a.b", "--json").json() == [1, 2]  # the CLI sees the same store


def test_documents_round_trip_through_memory(memory, tmp_path):
    (tmp_path / "guide.md").write_text("# Guide\n\nRotate the API keys every ninety days.\n")
    (tmp_path / "notes.txt").write_text("Unrelated text about gardening and tomatoes.\n")
    events = []
    summary = memory.docs.ingest([tmp_path], tags=["kb"], progress=lambda event, info: events.append(event))
    assert (summary.count("added"), summary.failed) == (2, [])
    assert "file" in events and "embedded" in events
    assert memory.docs.ingest([tmp_path]).count("unchanged") == 2
    docs = memory.docs.list(tag="kb")
    assert "Guide" in {d.title for d in docs} and len(docs) == 2
    hits = memory.search("rotate API keys", limit=1)
    assert hits[0].title == "Guide" and hits[0].kind == "docs"
    detail = memory.docs.show(hits[0].document_id)
    assert "ninety days" in detail.chunks[0].text
    recalled = memory.recall("how often to rotate keys", budget=200)
    assert "ninety days" in recalled.markdown and recalled.tokens <= 200
    assert len(memory.docs.rm([str(tmp_path / "notes.txt")])) == 1
    assert len(memory.docs.list()) == 1


def test_history_round_trip_through_memory(memory):
    first = memory.history.add("Deploy service X", role="user", conversation="c1")
    call = memory.history.add("", role="assistant", conversation="c1", tool="deploy", args={"env": "prod"},
                              result="error E42")
    assert (first.seq, call.seq, first.new_conversation, call.new_conversation) == (1, 2, True, False)
    assert memory.history.outcome(call.message_id, "failure", "VPN down").outcome == "failure"
    hits = memory.history.search("deploy", outcome="failure")
    assert [h.id for h in hits] == [call.message_id] and hits[0].outcome_note == "VPN down"
    assert [c.id for c in memory.history.conversations()] == ["c1"]
    info, messages = memory.history.show("c1")
    assert info.messages == 2 and messages[1].tool_args == {"env": "prod"}
    exported = memory.history.export()
    other = memory.with_store(memory.store_name + "-copy")
    assert other.history.import_(json.dumps(exported[0])).count("added") == 1
    assert other.history.export()[0]["messages"] == exported[0]["messages"]
    assert memory.history.list(limit=1)[0].id == call.message_id
    assert memory.history.prune("2000-01-01", dry_run=True) == []
    assert memory.history.rm(["c1"]) == ["c1"]
    with pytest.raises(InvalidInputError):
        memory.history.list(limit=-1)


def test_search_limits_are_checked_not_passed_to_the_database(memory):
    memory.history.add("hello there", conversation="c")
    assert len(memory.search("hello", kind="history", limit=1000)) == 1
    for bad in ({"limit": 0}, {"limit": 1001}, {"context": -5}):
        with pytest.raises(InvalidInputError):
            memory.search("hello", kind="history", **bad)


class _BrokenEmbedder:
    provider, model, max_tokens, batch_size = "broken", "nan-model", 256, 8

    def __init__(self, dim: int, rows: int = 0, nan: bool = False) -> None:
        self.dim, self.rows, self.nan = dim, rows, nan

    def embed(self, texts):
        import numpy as np

        matrix = np.ones((len(texts), self.dim + self.rows), dtype=np.float32)
        if self.nan:
            matrix[0, 0] = np.nan
        return matrix


@pytest.mark.parametrize("embedder, words", [(_BrokenEmbedder(8, rows=3), "dimension 11, expected 8"),
                                             (_BrokenEmbedder(8, nan=True), "NaN")])
def test_a_provider_answer_of_the_wrong_shape_is_an_embedding_error(store, embedder, words):
    with Memory.open(store, embedder=embedder) as m, pytest.raises(EmbeddingError) as caught:
        m.history.add("anything", conversation="c")
    assert words in caught.value.message and "broken:nan-model" in caught.value.message
    assert caught.value.exit_code == 6


def test_ltm_tools_prints_each_format_from_one_source(cli):
    openai = cli("tools").json()
    anthropic = cli("tools", "--format", "anthropic").json()
    mcp = cli("tools", "--format", "mcp", "--read-only").json()
    names = [t["function"]["name"] for t in openai]
    assert names == [t["name"] for t in anthropic] and "docs_ingest" not in names
    assert openai[0]["function"]["parameters"] == anthropic[0]["input_schema"]
    assert all(t["annotations"]["readOnlyHint"] for t in mcp) and len(mcp) < len(openai)
    assert cli("tools", "--format", "xml").exit_code == 4


def test_ltm_tools_call_runs_one_tool_for_agents_that_shell_out(cli):
    done = cli("tools", "call", "settings_set", "--args", '{"key": "voice.speed", "value": 1.3}', "--by", "bot")
    assert done.exit_code == 0 and done.json()["version"] == 1
    assert cli("settings", "history", "voice.speed", "--json").json()[0]["author"] == "bot"
    assert cli("tools", "call", "settings_get", "--args", '{"key": "voice.speed"}').json()["value"] == 1.3
    missing = cli("tools", "call", "settings_get", "--args", '{"key": "nope"}')
    assert missing.exit_code == 3 and "not found" in missing.stderr
    assert cli("tools", "call", "settings_get", "--args", "[1]").exit_code == 4
    assert cli("tools", "call", "settings_get", "--args", "{").exit_code == 4
    assert cli("tools", "call", "docs_ingest", "--args", '{"paths": ["x"]}').exit_code == 3  # not offered


def test_ingest_takes_one_string_or_path_as_one_path_and_refuses_an_empty_one(store, tmp_path, monkeypatch):
    """A str was iterated: 'ab.txt' became the paths a, b, ., t, x, t, and '.' walked the current directory
    ('/some/file.pdf' walked the whole file system)."""
    from ltm_cli.errors import InvalidInputError

    (tmp_path / "ab.txt").write_text("alpha beta gamma")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / "other.txt").write_text("must not be ingested")
    monkeypatch.chdir(elsewhere)
    with Memory.open(store) as memory:
        done = memory.docs.ingest(str(tmp_path / "ab.txt"), tags="one-tag")
        assert [f.status for f in done.files] == ["added"]
        assert memory.docs.ingest(tmp_path / "ab.txt").files[0].status == "unchanged"
        docs = memory.docs.list()
        assert [d.source for d in docs] == [str(tmp_path / "ab.txt")] and docs[0].tags == ["one-tag"]
        for empty in ("", "  ", [""], []):
            with pytest.raises(InvalidInputError):
                memory.docs.ingest(empty)
        assert len(memory.docs.list()) == 1


def test_python_api_mistakes_raise_ltm_errors_not_type_or_database_errors(memory):
    """Found by a user test of the Python API: each of these raised TypeError, ValueError, AttributeError or
    SQLAlchemy's DataError (with the SQL), or was silently changed on the way in."""
    import datetime as dt

    from ltm_cli.errors import ConfigError, InvalidInputError

    bad_calls = [
        lambda: memory.settings.set("a.b", {1, 2}),
        lambda: memory.settings.set("a.b", dt.datetime.now()),
        lambda: memory.settings.set("a.b", b"bytes"),
        lambda: memory.settings.set("a.b", (1, 2)),  # stored as [1, 2] but returned as (1, 2)
        lambda: memory.settings.set("a.b", {1: "a"}),  # stored as {"1": "a"}
        lambda: memory.settings.import_([("a.b", 1)]),
        lambda: memory.history.add("x", conversation="c", args={1, 2}),
        lambda: memory.history.outcome("abc", "success"),
        lambda: memory.search("x", limit="5"),
        lambda: memory.search("x", limit=2.5),
    ]
    for number, call in enumerate(bad_calls):
        with pytest.raises(InvalidInputError):
            call()
            pytest.fail(f"call {number} was accepted")
    added = memory.history.add("deploy done", conversation="c", meta="env=prod")  # one key=value, not per char
    assert memory.history.list(conversation="c")[-1].metadata == {"env": "prod"} and added.message_id
    with pytest.raises(ConfigError, match="unknown option 'chunk_tokenz'") as refused:
        Memory.open(chunk_tokenz=5)
    assert "chunk_tokens" in refused.value.hint
