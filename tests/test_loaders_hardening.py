"""Loader failures say what is really wrong; encrypted, damaged and UTF-16 files from real data (issue #11, 14)."""

from __future__ import annotations

import codecs

import pytest

from ltm_cli.errors import ExitCode
from tests.conftest import SHARED_DATA

PDF = SHARED_DATA / "pdf"
MANUALS = PDF / "manuals"


def _error(cli, *args: str) -> str:
    """The one file's failure message, as `ingest --json` reports it (the human form prints the same line)."""
    result = cli("ingest", *args, "--json")
    assert result.exit_code == ExitCode.FAILURE
    (file,) = result.json()["files"]
    assert file["status"] == "failed" and "\n" not in file["error"]
    return file["error"]


def _texts(cli, source: str) -> list[str]:
    return [c["text"] for c in cli("docs", "show", source, "--json").json()["chunks"]]


def test_aes256_pdf_opened_with_its_password_yields_its_text(cli):
    path = PDF / "encrypted" / "aes256-r6-password-abc.pdf"
    result = cli("ingest", str(path), "--password", "abc", "--json")
    assert result.exit_code == 0, result.stderr
    assert any("Issue 6010" in t for t in _texts(cli, str(path)))


def test_aes256_pdf_with_a_wrong_password_says_the_password_is_wrong(cli):
    error = _error(cli, str(PDF / "encrypted" / "aes256-r6-password-abc.pdf"), "--password", "abd")
    assert "wrong password" in error and "no text layer" not in error


def test_r6_password_is_saslprep_normalised(cli):
    path = PDF / "encrypted" / "r6-saslprep-password.pdf"
    result = cli("ingest", str(path), "--password", "S\u00aaSL\u00adprep")
    assert result.exit_code == 0, result.stderr
    assert any("Hello pdf.js world" in t for t in _texts(cli, str(path)))


def test_a_pdf_whose_pages_are_unencrypted_is_read_without_the_attachment_password(cli):
    # /StmF and /StrF are /Identity: only the embedded file (/EFF) is encrypted, so the page text is plain.
    path = PDF / "broken" / "truncated-encrypted-attachment.pdf"
    result = cli("ingest", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert any("Example" in t for t in _texts(cli, str(path)))
    assert "attach" in " ".join(result.json()["files"][0]["notices"])


def test_a_damaged_pdf_that_is_also_encrypted_says_both(cli):
    # The last trailer of this two-revision file carries /Encrypt (password "test"); its xref pointer is wrong.
    path = PDF / "broken" / "damaged-xref.pdf"
    error = _error(cli, str(path))
    assert "damaged" in error and "--password" in error
    assert cli("ingest", str(path), "--password", "test").exit_code == 0
    assert any("Issue 15893" in t for t in _texts(cli, str(path)))


def test_an_owner_password_only_pdf_ingests_without_a_password(cli, tmp_path):
    from pypdf import PdfReader, PdfWriter

    for algorithm in ("RC4-128", "AES-128", "AES-256"):
        writer = PdfWriter(clone_from=PdfReader(PDF / "misc" / "minimal-document.pdf"))
        writer.encrypt(user_password="", owner_password="Hello", algorithm=algorithm, permissions_flag=0)
        writer.write(tmp_path / f"owner-only-{algorithm}.pdf")
    result = cli("ingest", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr
    assert [f["status"] for f in result.json()["files"]] == ["added"] * 3


def test_a_pdf_whose_user_password_equals_its_owner_password_asks_for_it(cli):
    # The manifest calls this one owner-password-only; its /O entry decrypts to the user password "Hello".
    path = PDF / "encrypted" / "r4-owner-password-only-Hello.pdf"
    assert "--password" in _error(cli, str(path))
    opened = _error(cli, str(path), "--password", "Hello")  # vector drawing only: no text, and no scan either
    assert "no extractable text" in opened and "scanned" not in opened


def test_a_short_text_page_is_text_not_a_scan(cli):
    path = PDF / "broken" / "helloworld-bad.pdf"
    result = cli("ingest", str(path))
    assert result.exit_code == 0, result.stderr
    assert any("Hello, world!" in t for t in _texts(cli, str(path)))


def test_a_scan_with_a_stray_text_layer_is_still_reported_as_scanned(cli):
    assert "no text layer" in _error(cli, str(PDF / "scanned" / "scan-bad.pdf"))


@pytest.mark.parametrize("name", ["invalid-header-eof-only.pdf", "pdfbox-3148-fuzzed.pdf", "unreadable-metadata.pdf",
                                  "ghostscript-698804-fuzzed.pdf"])
def test_damaged_pdfs_are_called_damaged(cli, name):
    error = _error(cli, str(PDF / "broken" / name))
    assert "damaged PDF" in error and "password" not in error and "scanned" not in error


@pytest.mark.parametrize("name", ["truetype-without-cmap.pdf", "truetype-no-unicode-mapping.pdf",
                                  "type3-no-unicode-mapping.pdf"])
def test_fonts_without_a_unicode_map_are_not_called_scans(cli, name):
    error = _error(cli, str(PDF / "odd-encoding" / name))
    assert "no usable text" in error and "scanned" not in error


def test_a_sound_pdf_that_trips_a_pypdf_limit_is_not_called_damaged(cli):
    # gropdf writes 257 /Widths for a simple font; pypdf 7 stops at 256 on every page of the bash man page.
    result = cli("ingest", str(MANUALS / "bash-manpage.pdf"), "--json")
    if result.exit_code != 0:
        error = result.json()["files"][0]["error"]
        assert "safety limit" in error and "damaged" not in error


def test_a_truncated_pdf_is_called_truncated(cli, tmp_path):
    data = (PDF / "misc" / "pdflatex-outline.pdf").read_bytes()
    (tmp_path / "cut.pdf").write_bytes(data[: len(data) // 2])
    assert "truncated PDF" in _error(cli, str(tmp_path / "cut.pdf"))


def test_every_pdf_failure_is_one_line(cli):
    result = cli("ingest", str(PDF / "broken"), str(PDF / "encrypted"), str(PDF / "scanned"), "--json")
    failed = [f for f in result.json()["files"] if f["status"] == "failed"]
    assert failed and all(f["error"] and "\n" not in f["error"] for f in failed)


def _faq_excerpt() -> str:
    return (MANUALS / "bash-FAQ.txt").read_text(encoding="utf-8")[:4000]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_text_with_a_bom_is_ingested_as_text(cli, tmp_path, encoding):
    bom = codecs.BOM_UTF16_LE if encoding == "utf-16-le" else codecs.BOM_UTF16_BE
    path = tmp_path / "faq.txt"
    path.write_bytes(bom + _faq_excerpt().encode(encoding))
    result = cli("ingest", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["files"][0]["status"] == "added"
    texts = _texts(cli, str(path))
    assert any("chet.ramey@case.edu" in t for t in texts)
    assert not any("\ufeff" in t or "\x00" in t for t in texts)


def test_utf16_markdown_keeps_its_headings(cli, tmp_path):
    path = tmp_path / "notes.md"
    path.write_bytes(codecs.BOM_UTF16_LE + "# Über\n\n## Zürich\n\nGrüezi mitenand.\n".encode("utf-16-le"))
    assert cli("ingest", str(path)).exit_code == 0
    chunks = cli("docs", "show", str(path), "--json").json()["chunks"]
    assert chunks[0]["heading"] == "Über > Zürich" and "Grüezi" in chunks[0]["text"]


def test_utf16_openapi_spec_is_recognised_by_its_key(cli, tmp_path):
    spec = (SHARED_DATA / "openapi" / "oai-examples" / "v3.0" / "petstore.json").read_text(encoding="utf-8")
    path = tmp_path / "petstore.json"
    path.write_bytes(codecs.BOM_UTF16_BE + spec.encode("utf-16-be"))
    assert cli("ingest", str(path)).exit_code == 0
    chunks = cli("docs", "show", str(path), "--json").json()["chunks"]
    assert ("GET", "/pets") in {(c["location"].get("method"), c["location"].get("path")) for c in chunks}


def test_utf8_bom_leaves_no_stray_character(cli, tmp_path):
    for name in ("faq.txt", "faq.md", "faq.html"):
        (tmp_path / name).write_bytes(codecs.BOM_UTF8 + _faq_excerpt().encode("utf-8"))
    assert cli("ingest", str(tmp_path)).exit_code == 0
    docs = cli("docs", "list", "--json").json()
    assert len(docs) == 3 and not any("\ufeff" in (d["title"] or "") for d in docs)
    for doc in docs:
        assert not any("\ufeff" in t for t in _texts(cli, str(doc["id"])))
    piped = cli("ingest", "-", "--name", "clip.txt", input=codecs.BOM_UTF8 + b"Piped with a BOM.\n")
    assert piped.exit_code == 0 and _texts(cli, "stdin:clip.txt") == ["Piped with a BOM."]


def test_binary_with_nul_bytes_is_still_skipped(cli, tmp_path):
    # FF FE 00 00 opens UTF-32 LE, not UTF-16: the BOM rule must not let NUL-filled binary through
    (tmp_path / "blob.txt").write_bytes(b"\xff\xfe\x00\x00" + b"\x00\x01\x02\x03" * 64)
    result = cli("ingest", str(tmp_path / "blob.txt"), "--json")
    assert result.json()["files"][0]["status"] == "skipped"
