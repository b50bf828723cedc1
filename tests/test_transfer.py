"""`ltm export` / `ltm import` through the real CLI and a real PostgreSQL."""

from __future__ import annotations

import gzip
import json
import os
import zlib
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


# -- damaged files ---------------------------------------------------------------------------------------
def _fill_documents(cli, tmp_path: Path, count: int = 3) -> None:
    """Documents of a few dozen chunks each, so one's line is long enough to be cut in the middle."""
    for i in range(count):
        doc = tmp_path / f"manual-{i}.md"
        doc.write_text(f"# Manual {i}\n\n" + " ".join(f"step {i}.{n} turn the dial" for n in range(1500)) + "\n",
                       encoding="utf-8")
        assert cli("ingest", str(doc)).exit_code == 0


def _cut_gzip(data: bytes) -> bytes:
    """A gzip stream of `data` that stops there, without its end-of-stream marker: a file cut short."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)


def _lines_before_the_cut(path: Path) -> int:
    """How many whole lines a cut gzip file still holds."""
    return zlib.decompressobj(31).decompress(path.read_bytes()).count(b"\n")


def _nothing_in(cli, store: str) -> bool:
    return (cli("settings", "list", "--json", "--store", store).json() in ({}, [])
            and cli("docs", "list", "--json", "--store", store).json() == []
            and cli("history", "conversations", "--json", "--store", store).json() == [])


def test_a_truncated_gzip_export_imports_what_precedes_the_cut_and_names_its_line(cli, store, tmp_path, monkeypatch):
    _fill(cli, tmp_path)
    _fill_documents(cli, tmp_path)
    monkeypatch.chdir(tmp_path)  # short paths: each message stays on one line
    assert cli("export", "-o", "full.jsonl.gz", "--vectors").exit_code == 0
    whole = (tmp_path / "full.jsonl.gz").read_bytes()
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])  # as `head -c` would
    kept = _lines_before_the_cut(tmp_path / "cut.jsonl.gz")
    assert kept >= 5  # the header, the settings and more survive the cut

    dry = cli("import", "cut.jsonl.gz", "--store", f"{store}-cut", "--dry-run", "--json")
    assert dry.exit_code == 1, dry.stderr
    assert _nothing_in(cli, f"{store}-cut")
    result = cli("import", "cut.jsonl.gz", "--store", f"{store}-cut")
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr and "--debug" not in result.stderr
    damaged = [line for line in result.stderr.splitlines() if "truncated or corrupt" in line]
    assert damaged == [f"error: cut.jsonl.gz: the file is truncated or corrupt after line {kept}: its gzip data "
                       "ends before the end-of-stream marker"]
    assert "end marker" not in result.stderr  # one line about the damage, not two
    assert any(line.startswith("warning: added ") for line in result.stderr.splitlines())  # the summary
    assert cli("settings", "get", "voice.speed", "--store", f"{store}-cut").stdout.strip() == "1.4"

    again = cli("import", "cut.jsonl.gz", "--store", f"{store}-cut", "--json").json()
    assert again["added"] == {}
    assert again["unchanged"] == dry.json()["added"]  # the dry run reported what the import then wrote
    assert again["problems"] == dry.json()["problems"] == [
        {"line": 0, "message": f"the file is truncated or corrupt after line {kept}: its gzip data ends before "
                               "the end-of-stream marker"}]


@pytest.mark.parametrize("content", [b"\x1f\x8b" + b"not gzip after all\n" * 4, b"just some text\n"],
                         ids=["gzip-magic", "no-magic"])
def test_a_gz_file_that_is_not_gzip_is_refused_and_nothing_imported(cli, store, tmp_path, content):
    path = tmp_path / "backup.jsonl.gz"
    path.write_bytes(content)
    result = cli("import", str(path), "--store", f"{store}-none")
    assert result.exit_code == 4, result.stderr
    assert "--debug" not in result.stderr and "Traceback" not in result.stderr
    assert _nothing_in(cli, f"{store}-none")


def test_a_gzip_export_cut_before_its_first_line_ends_is_refused(cli, store, tmp_path, monkeypatch):
    assert cli("settings", "set", "a", "1").exit_code == 0
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "full.jsonl.gz"
    assert cli("export", "-o", path.name).exit_code == 0
    header = gzip.decompress(path.read_bytes()).split(b"\n")[0]
    for cut in (path.read_bytes()[:5], _cut_gzip(header[: len(header) // 2])):
        path.write_bytes(cut)
        result = cli("import", path.name, "--store", f"{store}-none")
        assert result.exit_code == 4, result.stderr
        assert result.stderr.startswith(f"error: cannot read {path.name}: its gzip data ends before")
        assert "--debug" not in result.stderr
        assert _nothing_in(cli, f"{store}-none")


@pytest.mark.parametrize("damage", ["corrupt-block", "bad-checksum"])
def test_a_corrupt_gzip_export_is_reported_after_its_last_good_line(cli, store, tmp_path, monkeypatch, damage):
    _fill(cli, tmp_path)
    # Last of the settings (by key), a value that does not compress: gzip reads its input in large pieces and
    # loses what one piece held when it meets the damage, so the damage must lie a few pieces past line 4.
    assert cli("settings", "set", "zz.padding", os.urandom(400_000).hex()).exit_code == 0
    monkeypatch.chdir(tmp_path)
    assert cli("export", "-o", "full.jsonl").exit_code == 0
    data = (tmp_path / "full.jsonl").read_bytes()
    if damage == "corrupt-block":  # whole lines, then a deflate block of the reserved type: zlib.error
        kept = 4  # the header and the settings before the padding
        packer = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = packer.compress(b"".join(data.splitlines(keepends=True)[:kept + 1])) + packer.flush(zlib.Z_FULL_FLUSH)
        body += b"\xff" * 64
    else:  # every line intact, the trailer's CRC wrong: gzip.BadGzipFile once the last line is read
        kept = data.count(b"\n")
        body = gzip.compress(data)
        body = body[:-8] + bytes(b ^ 0xFF for b in body[-8:-4]) + body[-4:]
    (tmp_path / "bad.jsonl.gz").write_bytes(body)
    result = cli("import", "bad.jsonl.gz", "--store", f"{store}-bad")
    assert result.exit_code == 1
    assert "--debug" not in result.stderr
    damaged = [line for line in result.stderr.splitlines() if "truncated or corrupt" in line]
    assert len(damaged) == 1 and damaged[0].startswith(
        f"error: bad.jsonl.gz: the file is truncated or corrupt after line {kept}: ")
    assert cli("settings", "get", "name", "--store", f"{store}-bad").stdout.strip() == "Ada"


def test_a_truncated_plain_export_reports_its_torn_last_line(cli, store, tmp_path):
    _fill(cli, tmp_path)
    path = tmp_path / "store.jsonl"
    assert cli("export", "-o", str(path)).exit_code == 0
    lines = path.read_bytes().splitlines(keepends=True)
    torn = next(i for i, line in enumerate(lines) if line.startswith(b'{"type":"document"'))
    path.write_bytes(b"".join(lines[:torn]) + lines[torn][: len(lines[torn]) // 2])
    result = cli("import", str(path), "--store", f"{store}-torn")
    assert result.exit_code == 1
    assert f"{path}:{torn + 1}: damaged record" in result.stderr
    assert "--debug" not in result.stderr
    assert cli("history", "conversations", "--json", "--store", f"{store}-torn").json() != []
    assert cli("docs", "list", "--json", "--store", f"{store}-torn").json() == []


@pytest.mark.parametrize("gzipped", [True, False], ids=["gzip", "plain"])
def test_a_document_cut_off_by_the_truncation_is_not_imported(cli, store, tmp_path, gzipped):
    """A document travels on one line with all its chunks and is queued with others for one transaction: the
    documents before the cut go in whole, the one whose chunks were cut off does not appear at all."""
    _fill_documents(cli, tmp_path, count=3)
    path = tmp_path / "docs.jsonl"
    assert cli("export", "-o", str(path), "--only", "docs").exit_code == 0
    lines = path.read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    last = max(i for i, r in enumerate(records) if r["type"] == "document")
    assert len(records[last]["chunks"]) > 2
    cut = b"".join(lines[:last]) + lines[last][: len(lines[last]) // 2]
    target = tmp_path / ("cut.jsonl.gz" if gzipped else "cut.jsonl")
    target.write_bytes(_cut_gzip(cut) if gzipped else cut)
    result = cli("import", str(target), "--store", f"{store}-cut", "--json")
    assert result.exit_code == 1, result.stderr
    summary = result.json()
    whole = [r for r in records[:last] if r["type"] == "document"]
    assert summary["added"] == {"document": len(whole)}
    assert summary["chunks"] == sum(len(r["chunks"]) for r in whole)
    listed = cli("docs", "list", "--json", "--store", f"{store}-cut").json()
    assert sorted(d["source"] for d in listed) == sorted(r["source"] for r in whole)
    assert records[last]["source"] not in {d["source"] for d in listed}


def test_an_import_without_vectors_into_the_same_server_counts_the_vectors_already_stored(cli, store, tmp_path):
    _fill(cli, tmp_path)
    path = tmp_path / "store.jsonl"
    assert cli("export", "-o", str(path)).exit_code == 0  # no --vectors: the import must find or compute them
    result = cli("import", str(path), "--store", f"{store}-copy", "--json")
    summary = result.json()
    assert result.exit_code == 0 and summary["vectors_computed"] == 0 and summary["vectors_stored"] > 0
    human = cli("import", str(path), "--store", f"{store}-copy2")
    assert f"0 computed, {summary['vectors_stored']} already stored" in human.stderr
