"""PDF text per page with pypdf: page numbers on every section, encryption, broken files, no text layer."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import signal
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from ltm_cli.loaders.base import LoadedDocument, LoadError, LoadOptions, Section, paragraphs

MIN_PAGE_CHARS = 16  # fewer non-space characters than this: the page has no usable text layer
_HYPHEN_BREAK = re.compile(r"(\w)-\n(\w)")


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _Timeout after `seconds` (main thread only: a fuzzed file must never hang the whole run)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[list[str]]:
    """pypdf's warnings are collected (shown with --verbose), never dumped on the user."""
    logger = logging.getLogger("pypdf")
    handler = _Collect()
    old_propagate, old_level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.messages
        handler.messages.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate
        logger.setLevel(old_level)


def _open(data: bytes, options: LoadOptions):  # noqa: ANN202 - pypdf types are imported lazily
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise LoadError(f"not a readable PDF ({_reason(exc)})") from exc
    if reader.is_encrypted:
        opened = False
        for password in ("", *options.passwords):
            try:
                if reader.decrypt(password):
                    opened = True
                    break
            except (DependencyError, FileNotDecryptedError, PdfReadError, ValueError, KeyError) as exc:
                if isinstance(exc, DependencyError):
                    raise LoadError(f"cannot decrypt: {exc}") from exc
        if not opened:
            hint = "wrong password" if options.passwords else "give --password (or a --password-file map)"
            raise LoadError(f"encrypted PDF: {hint}")
    return reader


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def _title(reader, first_page_text: str) -> str | None:  # noqa: ANN001
    try:
        meta = reader.metadata
        title = (meta.title or "").strip() if meta else ""
    except Exception:  # noqa: BLE001 - broken metadata must not fail the document
        title = ""
    if title and title.lower() not in ("untitled", "title"):
        return title
    for line in first_page_text.splitlines():
        if len(line.strip()) >= 3:
            return line.strip()[:160]
    return None


def load_pdf(path: Path, data: bytes, options: LoadOptions) -> LoadedDocument:
    sections: list[Section] = []
    no_text: list[int] = []
    failed_pages: list[int] = []
    with _quiet_pypdf() as pypdf_warnings:
        try:
            with _deadline(options.page_timeout):
                reader = _open(data, options)
                pages = list(reader.pages)
        except _Timeout as exc:
            raise LoadError(f"gave up opening after {options.page_timeout:.0f}s (damaged PDF?)") from exc
        except LoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on fuzzed input
            raise LoadError(f"not a readable PDF ({_reason(exc)})") from exc
        first_text = ""
        for number, page in enumerate(pages, start=1):
            try:
                with _deadline(options.page_timeout):
                    text = page.extract_text() or ""
            except _Timeout:
                failed_pages.append(number)
                continue
            except Exception:  # noqa: BLE001 - one bad page does not sink the document
                failed_pages.append(number)
                continue
            text = _HYPHEN_BREAK.sub(r"\1\2", text.replace("\x00", ""))
            if len("".join(text.split())) < MIN_PAGE_CHARS:
                no_text.append(number)
                continue
            if not first_text:
                first_text = text
            sections.append(Section(paragraphs(text), location={"page": number}))
        title = _title(reader, first_text)
    notices = []
    if no_text:
        notices.append(f"{len(no_text)} of {len(pages)} page(s) have no text layer (scanned?): "
                       f"{_ranges(no_text)}; OCR the file to make them searchable")
    if failed_pages:
        notices.append(f"{len(failed_pages)} page(s) could not be read: {_ranges(failed_pages)}")
    if not sections:
        if failed_pages and not no_text:
            raise LoadError("no page could be read (damaged PDF)")
        raise LoadError("no text layer (scanned or image-only PDF); OCR it first, e.g. with ocrmypdf")
    heading = title
    sections = [Section(s.blocks, heading=heading, location=s.location) for s in sections]
    return LoadedDocument("application/pdf", title, sections, metadata={"pages": len(pages)},
                          warnings=pypdf_warnings, notices=notices)


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start, prev = [], None, None
    for n in numbers + [None]:  # type: ignore[list-item]
        if start is None:
            start = prev = n
        elif n is not None and n == prev + 1:
            prev = n
        else:
            parts.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = n
    return ", ".join(parts[:20]) + (" …" if len(parts) > 20 else "")
