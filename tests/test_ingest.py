"""Reference memory: every input kind from real files, incremental rules, transactions, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ltm_cli.config import load_config
from ltm_cli.embedders import get_embedder
from ltm_cli.errors import ExitCode
from ltm_cli.services import ingest as ingest_svc
from ltm_cli.storage.engine import Database
from ltm_cli.storage.stores import StoreRef
from tests.conftest import SHARED_DATA

PDF = SHARED_DATA / "pdf"
OPENAPI = SHARED_DATA / "openapi"
MARKDOWN = SHARED_DATA / "markdown"


def _docs(cli):
    return cli("docs", "list", "--json").json()


def test_pdf_manual_keeps_page_numbers_on_every_chunk(cli):
    result = cli("ingest", str(PDF / "manuals" / "bashref.pdf"), "--json")
    assert result.exit_code == 0, result.stderr
    doc = _docs(cli)[0]
    assert doc["title"] == "Bash Reference Manual" and doc["metadata"]["pages"] == 214
    detail = cli("docs", "show", str(doc["id"]), "--json").json()
    pages = [c["location"]["page"] for c in detail["chunks"]]
    assert all(isinstance(p, int) for p in pages) and min(pages) >= 1 and max(pages) <= 214
    assert len(set(pages)) > 150


def test_query_whose_answer_is_on_a_known_page_returns_that_page_first(cli):
    cli("ingest", str(PDF / "manuals" / "bashref.pdf"))
    hits = cli("search", "appending standard output and standard error &>>word", "--json").json()
    assert hits[0]["location"]["page"] == 49


def test_a_folder_of_broken_pdfs_fails_per_file_and_keeps_the_good_ones(cli, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(PDF / "broken", folder)
    shutil.copy(PDF / "misc" / "minimal-document.pdf", folder / "good.pdf")
    result = cli("ingest", str(folder), "--json")
    assert result.exit_code == ExitCode.FAILURE
    statuses = {f["display"].rsplit("/", 1)[-1]: f for f in result.json()["files"]}
    assert statuses["good.pdf"]["status"] == "added"
    failed = [f for f in statuses.values() if f["status"] == "failed"]
    assert failed and all(f["error"] for f in failed)
    assert "good.pdf" in {d["source"].rsplit("/", 1)[-1] for d in _docs(cli)}
    human = cli("ingest", str(folder))
    assert "Traceback" not in human.stderr and "invalid-header-eof-only.pdf" in human.stderr


def test_scanned_pdf_is_reported_as_having_no_text_layer(cli):
    result = cli("ingest", str(PDF / "scanned" / "linn.pdf"))
    assert result.exit_code == ExitCode.FAILURE
    assert "no text layer" in result.stderr
    assert _docs(cli) == []


def test_encrypted_pdf_needs_its_password(cli, tmp_path):
    path = PDF / "encrypted" / "libreoffice-writer-password.pdf"
    without = cli("ingest", str(path))
    assert without.exit_code == ExitCode.FAILURE and "--password" in without.stderr
    wrong = cli("ingest", str(path), "--password", "nope")
    assert "wrong password" in wrong.stderr
    assert cli("ingest", str(path), "--password", "openpassword").exit_code == 0
    mapping = tmp_path / "pw.tsv"
    mapping.write_text("aes256-r6-password-abc.pdf\tabc\n")
    assert cli("ingest", str(PDF / "encrypted" / "aes256-r6-password-abc.pdf"),
               "--password-file", str(mapping)).exit_code in (0, ExitCode.FAILURE)
    assert len(_docs(cli)) >= 1


def test_reingesting_an_unchanged_file_writes_nothing_and_embeds_nothing(cli):
    path = str(PDF / "misc" / "pdflatex-outline.pdf")
    first = cli("ingest", path, "--json").json()
    second = cli("ingest", path, "--json").json()
    assert first["files"][0]["status"] == "added" and first["embedded"] > 0
    assert second["files"][0]["status"] == "unchanged"
    assert second["embedded"] == 0 and second["chunks"] == 0
    assert _docs(cli)[0]["updated_at"] == cli("docs", "list", "--json").json()[0]["updated_at"]


def test_a_changed_file_replaces_its_chunks_and_force_reembeds(cli, tmp_path):
    note = tmp_path / "note.md"
    note.write_text("# Notes\n\nThe launch code is alpha.\n")
    cli("ingest", str(note))
    note.write_text("# Notes\n\nThe launch code is bravo.\n\n## More\n\nSecond section.\n")
    changed = cli("ingest", str(note), "--json").json()
    assert changed["files"][0]["status"] == "updated"
    texts = [c["text"] for c in cli("docs", "show", str(note), "--json").json()["chunks"]]
    assert any("bravo" in t for t in texts) and not any("alpha" in t for t in texts)
    forced = cli("ingest", str(note), "--force", "--json").json()
    assert forced["files"][0]["status"] == "updated" and forced["cached"] == len(texts)


def test_identical_text_is_embedded_once_across_files(cli, tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("Exactly the same paragraph in two files.\n")
    result = cli("ingest", str(tmp_path), "--json").json()
    assert result["embedded"] == 1 and result["chunks"] == 2


def test_dry_run_reports_and_writes_nothing(cli, tmp_path):
    (tmp_path / "x.md").write_text("# X\n\nSomething.\n")
    result = cli("ingest", str(tmp_path), "--dry-run", "--json").json()
    assert result["dry_run"] is True and result["files"][0]["status"] == "added"
    assert _docs(cli) == []


def test_a_failure_mid_document_leaves_nothing_visible(cli, tmp_path, monkeypatch):
    (tmp_path / "doc.md").write_text("# Title\n\n" + "\n\n".join(f"Paragraph {i} " * 40 for i in range(30)))

    def explode(*args, **kwargs):
        raise RuntimeError("injected failure while writing chunks")

    config = load_config()
    with monkeypatch.context() as patch, pytest.raises(RuntimeError):
        patch.setattr(ingest_svc, "copy_chunks", explode)
        ingest_svc.Ingestor(Database(config), config, get_embedder(config), StoreRef(config.store)).run(
            [str(tmp_path)])
    assert _docs(cli) == []
    again = cli("ingest", str(tmp_path), "--json").json()
    assert again["files"][0]["status"] == "added"


def test_kill_9_mid_run_leaves_only_whole_documents_and_a_rerun_finishes(cli, tmp_path, store):
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import text

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1500):  # several chunks each
        (folder / f"f{i:04}.md").write_text(f"# File {i}\n\n" + "\n\n".join(
            f"## Part {p}\n\n" + f"file {i} part {p} sentence. " * 60 for p in range(3)))
    proc = subprocess.Popen([sys.executable, "-m", "ltm_cli", "ingest", str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    db = Database(load_config())
    try:
        deadline = time.monotonic() + 120
        visible = 0
        while visible < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            with db.connect() as conn:
                visible = conn.execute(text("SELECT count(*) FROM documents d JOIN stores s ON s.id = d.store_id "
                                            "WHERE s.name = :n"), {"n": store}).scalar()
        assert proc.poll() is None, "the ingest finished before it could be killed: make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with db.connect() as conn:
            counts = conn.execute(text(
                "SELECT d.source, count(c.id) AS n, max(c.ordinal) AS top FROM documents d "
                "JOIN stores s ON s.id = d.store_id LEFT JOIN chunks c ON c.document_id = d.id "
                "WHERE s.name = :n GROUP BY d.source"), {"n": store}).all()
    finally:
        db.dispose()
    assert 20 <= len(counts) < 1500
    again = cli("ingest", str(folder), "--json").json()
    statuses = [f["status"] for f in again["files"]]
    assert statuses.count("unchanged") == len(counts) and statuses.count("added") == 1500 - len(counts)
    complete = {f["source"]: f["chunks"] for f in again["files"]}
    # every document that was visible after the kill already had all of its chunks, numbered without gaps
    assert all(row.n == complete[row.source] and row.top == row.n - 1 for row in counts)
    assert len(_docs(cli)) == 1500


def test_markdown_chunks_keep_heading_paths_and_front_matter(cli, tmp_path):
    doc = tmp_path / "guide.md"
    doc.write_text("---\ntitle: The Guide\nowner: docs-team\n---\n# Install\n\nIntro.\n\n## Linux\n\n### Docker\n\n"
                   "Run it:\n\n```bash\ndocker run -it ltm\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert cli("ingest", str(doc)).exit_code == 0
    detail = cli("docs", "show", str(doc), "--json").json()
    assert detail["document"]["title"] == "The Guide"
    assert detail["document"]["metadata"]["owner"] == "docs-team"
    docker = [c for c in detail["chunks"] if "docker run" in c["text"]][0]
    assert docker["heading"] == "Install > Linux > Docker"
    assert "```bash\ndocker run -it ltm\n```" in docker["text"] and "| 1 | 2 |" in docker["text"]


def test_markdown_made_only_of_headings_is_still_indexed(cli, tmp_path):
    (tmp_path / "outline.md").write_text("# Release plan\n\n## Freeze the branch on Friday\n## Tag v2.0\n")
    result = cli("ingest", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    hits = cli("search", "freeze branch", "--mode", "keyword", "--json").json()
    assert hits and hits[0]["text"] == "Freeze the branch on Friday"
    assert hits[0]["location"]["heading"] == "Release plan > Freeze the branch on Friday"


def test_markdown_tree_with_include_and_exclude(cli):
    result = cli("ingest", str(MARKDOWN / "typer-docs"), "--include", "*.md", "--exclude", "tutorial/*", "--json")
    assert result.exit_code == 0, result.stderr
    sources = [d["source"] for d in _docs(cli)]
    assert sources and not any("/tutorial/" in s for s in sources)


def test_openapi_operations_become_chunks_with_method_and_path(cli):
    result = cli("ingest", str(OPENAPI / "docker-engine" / "swagger.yaml"), "--json")
    assert result.exit_code == 0, result.stderr
    detail = cli("docs", "show", "*swagger.yaml", "--json").json()
    operations = {(c["location"]["method"], c["location"]["path"])
                  for c in detail["chunks"] if "method" in c["location"]}
    assert len(operations) == 108
    assert ("POST", "/containers/create") in operations


@pytest.mark.parametrize("spec", ["v2.0/yaml/petstore.yaml", "v3.0/petstore.json", "v3.1/webhook-example.yaml",
                                  "v2.0/json/petstore-separate/spec/swagger.json"])
def test_openapi_versions_and_multi_file_specs(cli, spec):
    result = cli("ingest", str(OPENAPI / "oai-examples" / spec), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["files"][0]["chunks"] >= 2


def test_search_for_an_operation_answers_method_and_path(cli):
    cli("ingest", str(OPENAPI / "oai-examples" / "v3.0" / "petstore-expanded.yaml"))
    hits = cli("search", "create a new pet in the store", "--json").json()
    assert (hits[0]["location"]["method"], hits[0]["location"]["path"]) == ("POST", "/pets")


def test_dangling_refs_are_reported_not_fatal(cli, tmp_path):
    (tmp_path / "api.yaml").write_text(
        "openapi: 3.0.0\ninfo: {title: Demo, version: '1'}\npaths:\n  /things:\n    get:\n"
        "      summary: List things\n      responses:\n        '200':\n          description: ok\n"
        "          content:\n            application/json:\n              schema:\n"
        "                $ref: 'models/missing.yaml'\n")
    result = cli("ingest", str(tmp_path / "api.yaml"))
    assert result.exit_code == 0
    assert "unresolved $ref" in result.stderr and "models/missing.yaml" in result.stderr


def test_digitalocean_multi_file_spec_resolves_external_refs(cli):
    entry = OPENAPI / "digitalocean" / "specification" / "DigitalOcean-public.v2.yaml"
    result = cli("ingest", str(entry), "--json")
    assert result.exit_code == 0, result.stderr
    doc = _docs(cli)[0]
    assert doc["metadata"]["operations"] == 659 and doc["metadata"]["files"] > 2000


def test_stdin_with_a_name(cli):
    result = cli("ingest", "-", "--name", "clipboard.txt", input="Paste from the clipboard about zebras.\n")
    assert result.exit_code == 0, result.stderr
    assert _docs(cli)[0]["source"] == "stdin:clipboard.txt"


def test_binary_and_missing_files_are_reported(cli, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / ".hidden.txt").write_text("secret")
    result = cli("ingest", str(tmp_path), str(tmp_path / "absent.txt"), "--json")
    files = {f["display"].rsplit("/", 1)[-1]: f["status"] for f in result.json()["files"]}
    assert files == {"blob.bin": "skipped", "absent.txt": "failed"}
    assert result.exit_code == ExitCode.FAILURE


def test_tags_meta_and_docs_rm(cli, tmp_path):
    (tmp_path / "a.txt").write_text("alpha text")
    cli("ingest", str(tmp_path / "a.txt"), "--tag", "manual", "--meta", "team=core", "--meta", "rev=3")
    doc = _docs(cli)[0]
    assert doc["tags"] == ["manual"] and doc["metadata"]["team"] == "core" and doc["metadata"]["rev"] == 3
    assert cli("docs", "list", "--tag", "other", "--json").json() == []
    assert cli("docs", "rm", str(tmp_path / "a.txt")).exit_code == ExitCode.INVALID_INPUT  # no --yes, no tty
    assert cli("docs", "rm", str(doc["id"]), "--yes").exit_code == 0
    assert _docs(cli) == [] and cli("docs", "rm", "999999", "--yes").exit_code == ExitCode.NOT_FOUND


def test_db_gc_removes_only_unused_vectors_and_waits_for_writers(cli, tmp_path):
    import uuid

    marker = uuid.uuid4().hex
    (tmp_path / "keep.md").write_text(f"# Keep {marker}\n\nThe heron nests by the lake {marker}.\n")
    (tmp_path / "drop.md").write_text(f"# Drop {marker}\n\n" + "\n\n".join(
        f"Paragraph {i} about otters {marker}. " * 30 for i in range(6)))
    assert cli("ingest", str(tmp_path)).exit_code == 0
    cli("db", "gc")  # whatever earlier tests left behind
    assert cli("db", "gc", "--dry-run", "--json").json()["vectors"] == 0
    assert cli("docs", "rm", str(tmp_path / "drop.md"), "--yes").exit_code == 0
    counted = cli("db", "gc", "--dry-run", "--json").json()
    assert counted["dry_run"] and counted["vectors"] > 0
    assert cli("db", "gc", "--json").json()["vectors"] == counted["vectors"]
    assert cli("db", "gc", "--dry-run", "--json").json()["vectors"] == 0
    hits = cli("search", f"The heron nests by the lake {marker}.", "--mode", "vector", "--json").json()
    assert hits and hits[0]["source"].endswith("keep.md")  # the vectors still in use are untouched

    db = Database(load_config())
    try:
        with db.writing():  # an ingest in progress
            busy = cli("db", "gc")
        assert busy.exit_code == ExitCode.CONFLICT and "running" in busy.stderr
    finally:
        db.dispose()


def test_an_empty_heading_keeps_its_level_but_adds_no_blank_segment_to_the_heading_path():
    """typer's docs open with a bare `#`: their headings read " > Installation" and search showed
    "index —  > Installation"."""
    from ltm_cli.loaders.base import LoadOptions
    from ltm_cli.loaders.markdown import load_markdown

    text = b"#\n\nIntro text.\n\n## Installation\n\nRun pip.\n\n### Linux\n\nUse apt.\n\n#\n\n## Usage\n\nRun it.\n"
    doc = load_markdown(Path("index.md"), text, LoadOptions())
    headings = [s.heading for s in doc.sections]
    assert headings == [None, "Installation", "Installation > Linux", "Usage"]
    assert all(not (s.location.get("heading") or "x").startswith(" ") for s in doc.sections)
    assert doc.title == "index"


def test_docs_show_of_a_glob_matching_several_documents_asks_for_one_with_exit_4(cli, tmp_path):
    for name in ("a.md", "b.md"):
        (tmp_path / name).write_text(f"# {name}\n\nsome text\n")
    assert cli("ingest", str(tmp_path)).exit_code == 0
    several = cli("docs", "show", str(tmp_path / "*.md"))
    assert several.exit_code == 4 and "matches 2 documents; name one" in several.stderr
    assert cli("docs", "show", str(tmp_path / "nothing*.md")).exit_code == 3
    assert cli("docs", "show", str(tmp_path / "a.md")).exit_code == 0
