"""`ltm export` / `ltm import` through the real CLI and a real PostgreSQL."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest


def _fill(cli, tmp_path: Path) -> None:
    """A store with every kind of record: settings with history, a conversation with a tool call and an
    outcome, documents, and a chain of notes with sources."""
    for args in (("settings", "set", "voice.speed", "1.2"), ("settings", "set", "voice.speed", "1.4"),
                 ("settings", "set", "name", "Ada", "--note", "asked")):
        assert cli(*args).exit_code == 0
    conv = cli("history", "add", "--new", "Deploy the web app", "--title", "deploy").stdout.strip()
    tool = cli("history", "add", "-c", conv, "--role", "assistant", "--tool", "kubectl", "--args",
               '{"cmd": "apply"}', "--result", "error: refused", "Deploying").stdout.strip()
    assert cli("history", "outcome", tool, "failure", "--note", "VPN down").exit_code == 0
    doc = tmp_path / "guide.md"
    doc.write_text("# Guide\n\n## Install\n\nRun the installer and reboot.\n\n## Reset\n\nHold the pin for ten "
                   "seconds to reset the device.\n", encoding="utf-8")
    assert cli("ingest", str(doc)).exit_code == 0
    first = cli("note", "add", "The VPN must be up before deploying", "--about", "deploy", "--source", tool,
                "--json")
    assert first.exit_code == 0, first.stderr
    note_id = str(first.json()["note"]["id"])
    assert cli("note", "supersede", note_id, "Connect the VPN, then deploy", "--json").exit_code == 0


def _records(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _content(path: Path) -> list[dict]:
    """The export without what is allowed to differ: the header's store and time, note ids (as positions)."""
    records = _records(path)
    header = {k: v for k, v in records[0].items() if k not in ("store", "exported_at")}
    ids = {r["id"]: i for i, r in enumerate(x for x in records if x["type"] == "note")}
    body = []
    for r in records[1:]:
        if r["type"] == "note":
            r = {**r, "id": ids[r["id"]], "superseded_by": ids.get(r["superseded_by"], r["superseded_by"])}
        body.append(r)
    return [header, *body]


@pytest.mark.parametrize("vectors", [False, True])
def test_round_trip_into_an_empty_store_is_lossless(cli, store, tmp_path, vectors):
    _fill(cli, tmp_path)
    first = tmp_path / "one.jsonl.gz"
    flags = ["--vectors"] if vectors else []
    made = cli("export", "-o", str(first), *flags)
    assert made.exit_code == 0, made.stderr
    imported = cli("import", str(first), "--store", f"{store}-copy-of-it", "--json")
    assert imported.exit_code == 0, imported.stderr
    summary = imported.json()
    assert summary["added"] == {"setting": 3, "conversation": 1, "message": 2, "document": 1, "note": 2}
    assert ("reused" in summary["vector_source"]) == vectors
    assert summary["vectors_computed"] == (0 if vectors else summary["vectors_computed"])
    second = tmp_path / "two.jsonl"
    assert cli("export", "-o", str(second), "--store", f"{store}-copy-of-it", *flags).exit_code == 0
    assert _content(second) == _content(first)
    kinds = [r["type"] for r in _records(second)]
    assert kinds[0] == "header" and kinds[-1] == "end"
    shown = cli("history", "list", "--outcome", "failure", "--json", "--store", f"{store}-copy-of-it").json()
    assert shown[0]["outcome_note"] == "VPN down"
    notes = cli("note", "list", "--all", "--json", "--store", f"{store}-copy-of-it").json()
    closed = [n for n in notes if n["valid_until"]]
    assert len(closed) == 1 and closed[0]["superseded_by"] == next(n["id"] for n in notes if not n["valid_until"])
    assert closed[0]["source_messages"]


def test_importing_the_same_file_twice_adds_nothing(cli, store, tmp_path):
    _fill(cli, tmp_path)
    path = tmp_path / "store.jsonl"
    assert cli("export", "-o", str(path), "--vectors").exit_code == 0
    assert cli("import", str(path), "--store", f"{store}-twice").exit_code == 0
    again = cli("import", str(path), "--store", f"{store}-twice", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["added"] == {}
    assert again.json()["unchanged"] == {"setting": 3, "conversation": 1, "document": 1, "note": 2}
    assert cli("import", str(path), "--json").json()["added"] == {}  # into the store it came from


def test_a_damaged_line_is_reported_and_the_rest_imported(cli, store, tmp_path):
    _fill(cli, tmp_path)
    path = tmp_path / "store.jsonl"
    assert cli("export", "-o", str(path)).exit_code == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    bad = next(i for i, line in enumerate(lines) if '"type":"conversation"' in line)
    lines[bad] = lines[bad][: len(lines[bad]) // 2]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = cli("import", str(path), "--store", f"{store}-damaged")
    assert result.exit_code == 1
    assert f"{path}:{bad + 1}: damaged record" in result.stderr
    listed = cli("docs", "list", "--json", "--store", f"{store}-damaged").json()
    assert len(listed) == 1
    assert cli("history", "conversations", "--json", "--store", f"{store}-damaged").json() == []


def test_vectors_from_another_model_are_recomputed(cli, store, tmp_path):
    _fill(cli, tmp_path)
    path = tmp_path / "store.jsonl"
    assert cli("export", "-o", str(path), "--vectors").exit_code == 0
    result = cli("import", str(path), "--store", f"{store}-other-model", "--json",
                 env={"LTM_EMBEDDING_DIMENSIONS": "256"})
    assert result.exit_code == 0, result.stderr
    summary = result.json()
    assert summary["vector_source"].startswith("recomputed with hash/feature-hash-v1 (256)")
    assert summary["vectors_computed"] > 0 and summary["vectors_reused"] == 0


def test_only_and_dry_run(cli, store, tmp_path):
    _fill(cli, tmp_path)
    path = tmp_path / "settings.jsonl"
    assert cli("export", "-o", str(path), "--only", "settings").exit_code == 0
    assert {r["type"] for r in _records(path)} == {"header", "setting", "end"}
    dry = cli("import", str(path), "--store", f"{store}-dry", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    assert dry.json()["added"] == {"setting": 3}
    assert cli("settings", "list", "--json", "--store", f"{store}-dry").json() in ({}, [])
    assert cli("export", "-o", str(path), "--only", "bogus").exit_code == 4


def test_a_file_that_is_not_an_export_is_refused(cli, store, tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"messages": []}\n', encoding="utf-8")
    result = cli("import", str(path))
    assert result.exit_code == 4
    assert "not an ltm export" in result.stderr


def test_export_to_stdout_streams_the_file(cli, store, tmp_path):
    assert cli("settings", "set", "a", "1").exit_code == 0
    result = cli("export", "-o", "-")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0]["format"] == "ltm-export" and lines[1]["key"] == "a" and lines[-1]["type"] == "end"


@pytest.mark.parametrize("command", [("export", "-o"), ("history", "export", "-o"), ("settings", "export")])
def test_an_export_to_a_path_that_cannot_be_written_fails_in_one_line_and_leaves_nothing(cli, tmp_path, command):
    assert cli("settings", "set", "voice.speed", "1.2").exit_code == 0
    assert cli("history", "add", "hello", "-c", "c1").exit_code == 0
    folder = tmp_path / "out"
    folder.mkdir()
    for target, reason in ((folder, "it is a directory"), (tmp_path / "missing" / "x.jsonl", "No such file")):
        result = cli(*command, str(target))
        assert result.exit_code == 4, result.stderr
        first = result.stderr.strip().splitlines()[0]
        assert first.startswith(f"error: cannot write {target}: ") and reason in first
        assert "--debug" not in result.stderr  # an expected failure, not the unexpected-error path
    assert list(tmp_path.rglob("*.tmp")) == [] and list(folder.iterdir()) == []
    assert cli(*command, str(folder / "ok.json")).exit_code == 0 and (folder / "ok.json").stat().st_size > 0
    assert [p.name for p in folder.iterdir()] == ["ok.json"]
