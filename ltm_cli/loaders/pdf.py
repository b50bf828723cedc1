"""PDF text per page with pypdf: page numbers on every section, encryption, broken files, no text layer;
running headers, footers and page numbers kept out of the text, contents and index pages marked."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import signal
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ltm_cli.loaders.base import (
    LoadedDocument,
    LoadError,
    LoadOptions,
    Section,
    hyphen_is_a_break,
    join_hyphenated,
    normalise_glyphs,
    paragraphs,
    word_counts,
)

MIN_PAGE_CHARS = 16  # fewer non-space characters than this: the page has no usable text layer
_WORD = re.compile(r"[^\W\d_]{3,}")  # three letters in a row, any script: a short page that has a word is text


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


def _open(data: bytes, options: LoadOptions, log: list[str]):  # noqa: ANN202 - pypdf types are lazy
    """A reader ready for its pages, and notices about what was skipped; LoadError saying what is wrong.

    `log` is the live list of pypdf's warnings: anything in it once the file is parsed means pypdf had to
    rebuild a damaged structure (usually the cross-reference table)."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except NotImplementedError as exc:  # a security handler other than /Standard, a public-key /SubFilter…
        raise LoadError(f"encrypted with an unsupported method ({_reason(exc)})") from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise _unreadable(data, exc) from exc
    if not reader.is_encrypted:
        return reader, []
    repairs = list(log)  # before decrypting, whose own warnings (a /Perms mismatch) are not about structure
    if _unlock(reader, options):
        return reader, []
    if _open_plain_pages(reader):
        return reader, ["its attached files are encrypted and were not read (the pages are not)"]
    damage = f", and damaged (pypdf: {repairs[0][:120]})" if repairs else ""
    if len(options.passwords) == 1:
        raise LoadError(f"wrong password for this encrypted PDF{damage}")
    if options.passwords:
        raise LoadError(f"wrong password: none of the {len(options.passwords)} given opens this encrypted PDF"
                        f"{damage}")
    raise LoadError(f"encrypted PDF{damage}: give --password (or a --password-file map)")


def _unlock(reader, options: LoadOptions) -> bool:  # noqa: ANN001
    """Try the empty user password (owner-password-only files) and then each given one.

    Once one is accepted pypdf decrypts every object as it is read, AES-256 (R5/R6, SASLprep-normalised
    password) included: pages need nothing more before extract_text."""
    from pypdf.errors import DependencyError, PdfReadError

    broken: Exception | None = None
    for password in ("", *options.passwords):
        try:
            if reader.decrypt(password):
                return True
        except DependencyError as exc:
            raise LoadError(f"cannot decrypt: {_reason(exc)}") from exc
        except (PdfReadError, ValueError, KeyError, TypeError) as exc:
            broken = broken or exc
    if broken is not None:  # no password could even be checked: the /Encrypt entry itself is bad
        raise LoadError(f"damaged PDF: its encryption dictionary cannot be read ({_reason(broken)})") from broken
    return False


def _open_plain_pages(reader) -> bool:  # noqa: ANN001
    """Whether the file encrypts only attached files (/StmF and /StrF /Identity, /EFF set), now made readable.

    Its pages and strings are stored in the clear, so any viewer shows them without a password; pypdf still
    refuses every object until one is given, so stand its encryption down (a private attribute, checked:
    should pypdf rename it, the file is reported as needing a password, as before)."""
    try:
        encrypt = reader.trailer["/Encrypt"].get_object()
        plain = encrypt.get("/V", 0) >= 4 and all(
            encrypt.get(key, "/Identity") == "/Identity" for key in ("/StmF", "/StrF"))
    except Exception:  # noqa: BLE001 - a damaged /Encrypt is simply not this case
        return False
    if not plain or not hasattr(reader, "_encryption"):
        return False
    reader._encryption = None
    del reader.trailer["/Encrypt"]
    return True


def _unreadable(data: bytes, exc: BaseException) -> LoadError:
    """What is wrong with a file pypdf cannot parse at all."""
    if _over_limit(exc):
        return LoadError(_limit_message(exc))
    if b"%PDF-" not in data[:1024]:
        return LoadError("not a PDF: the file has no %PDF- header")
    if b"%%EOF" not in data[-2048:]:
        return LoadError(f"truncated PDF: the file stops before its end (%%EOF) marker ({_reason(exc)}); "
                         "copy or download it again")
    return LoadError(f"damaged PDF ({_reason(exc)})")


def _over_limit(exc: BaseException) -> bool:
    """pypdf's safety limits also trip on sound files (gropdf writes 257 /Widths where pypdf allows 256)."""
    return type(exc).__name__ == "LimitReachedError"


def _limit_message(exc: BaseException, where: str = "") -> str:
    return f"pypdf refuses it{where}: one of its safety limits was hit ({_reason(exc)}), which need not mean damage"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def _has_images(page) -> bool:  # noqa: ANN001
    try:
        return len(page.images) > 0  # names only: nothing is decoded
    except Exception:  # noqa: BLE001 - a broken resource dictionary: no image we could find
        return False


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
    scanned: list[int] = []  # images but (almost) no text: OCR would help
    blank: list[int] = []  # neither text nor images: blank, or vector drawing only
    garbled: list[int] = []  # a few characters but no word: glyphs from fonts without a Unicode map
    failed_pages: list[int] = []
    failure: tuple[int, BaseException] | None = None  # the first page that could not be read, and why
    with _quiet_pypdf() as pypdf_warnings:
        try:
            with _deadline(options.page_timeout):
                reader, notices = _open(data, options, pypdf_warnings)
                pages = list(reader.pages)
        except _Timeout as exc:
            raise LoadError(f"damaged PDF? gave up opening it after {options.page_timeout:.0f}s") from exc
        except LoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - pypdf raises many kinds on fuzzed input
            raise _unreadable(data, exc) from exc
        repairs = list(pypdf_warnings)
        texts: list[tuple[int, str]] = []  # (page number, raw text) of the pages with text
        for number, page in enumerate(pages, start=1):
            try:
                with _deadline(options.page_timeout):
                    text = page.extract_text() or ""
                    chars = len("".join(text.split()))
                    # A few characters over a picture are a scan's stray text layer (a page number, an OCR
                    # crumb); the same few alone on a page are its text ("Issue 6010", a title page) if they
                    # make a word, and glyph codes from a font without a Unicode map ("’>in") if not.
                    short = chars < MIN_PAGE_CHARS
                    pictured = short and _has_images(page)
                    wordless = short and not _WORD.search(text)
            except _Timeout as exc:
                failed_pages.append(number)
                failure = failure or (number, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad page does not sink the document
                failed_pages.append(number)
                failure = failure or (number, exc)
                continue
            if pictured or wordless:
                (scanned if pictured else garbled if chars else blank).append(number)
                continue
            texts.append((number, text))
        for page in clean_pages(texts):
            location = {"page": page.number, "toc": True} if page.toc else {"page": page.number}
            sections.append(Section(paragraphs(page.text), location=location))
        title = _title(reader, next((text for _, text in texts), ""))
    if scanned:
        notices.append(f"{len(scanned)} of {len(pages)} page(s) have no text layer (scanned?): "
                       f"{_ranges(scanned)}; OCR the file to make them searchable")
    if failed_pages:
        notices.append(f"{len(failed_pages)} page(s) could not be read: {_ranges(failed_pages)}")
    # In a document with text these are mostly divider pages ("2", "§"): worth --verbose, not a notice.
    if garbled:
        pypdf_warnings.append(f"{len(garbled)} page(s) gave a few characters but no word: {_ranges(garbled)}")
    if blank:
        pypdf_warnings.append(f"{len(blank)} page(s) have neither text nor images: {_ranges(blank)}")
    if not sections:
        raise LoadError(_why_no_text(len(pages), scanned, garbled, failed_pages, failure, repairs, options))
    heading = title
    sections = [Section(s.blocks, heading=heading, location=s.location) for s in sections]
    return LoadedDocument("application/pdf", title, sections, metadata={"pages": len(pages)},
                          warnings=pypdf_warnings, notices=notices)


def _why_no_text(total: int, scanned: list[int], garbled: list[int], failed: list[int],
                 failure: tuple[int, BaseException] | None, repairs: list[str], options: LoadOptions) -> str:
    """One line for a PDF that opened but gave no text: scanned, damaged, unmapped fonts, or no text at all."""
    if scanned:
        return (f"no text layer (scanned or image-only PDF: {len(scanned)} of {total} page(s) are images); "
                "OCR it first, e.g. with ocrmypdf")
    if failure:
        number, exc = failure
        unread = f"{len(failed)} of {total} page(s)"
        if _over_limit(exc):
            return _limit_message(exc, f" on {unread}")
        if isinstance(exc, _Timeout):
            return f"damaged PDF? {unread} took over {options.page_timeout:.0f}s each to read"
        return f"damaged PDF: {unread} could not be read (page {number}: {_reason(exc)})"
    if not total:
        return "damaged PDF: " + (f"no pages found (pypdf: {repairs[0][:120]})" if repairs else "it has no pages")
    if garbled:
        return ("no usable text: only a few characters and no word come out (fonts without a Unicode map?); "
                "OCR it, e.g. with ocrmypdf --force-ocr")
    if repairs:
        return f"damaged PDF: no page has text or images after repair (pypdf: {repairs[0][:120]})"
    return "no extractable text: no page draws text or images (blank, or vector drawing only)"


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


# -- page structure: running headers and footers, page numbers, contents and index pages ----------------------
EDGE_LINES = 2  # running headers and footers sit in the first and last lines of a page
RUNNING_MIN_PAGES = 3  # a line with a page number in it, repeated at the edge of this many pages, is running
RUNNING_PLAIN_PAGES = 5  # one without a number must repeat more (and on a tenth of the pages) to count
TOC_LEADER_SHARE = 0.3  # lines with dot leaders ("Redirections . . . . 41") that make a page a contents page
TOC_REFERENCE_SHARE = 0.55  # lines ending in page references ("parameters, 22, 27") that make an index page
TOC_MIN_LINES = 8
_DIGITS = re.compile(r"\d+")
_EDGE_ROMAN = re.compile(r"^[ivxlc]+(?= )|(?<= )[ivxlc]+$")  # a lower-case roman page number starting or ending a line
_EDGE_NUMBER = re.compile(r"^(\d{1,4})(?=\s)|(?<=\s)(\d{1,4})$|^(?:page\s+)?(\d{1,4})(?:\s*(?:/|of)\s*\d{1,4})?$",
                          re.IGNORECASE)
_DASHES = re.compile(r"^[-–—\s]+|[-–—\s]+$")
_ROMAN = re.compile(r"^(?=[ivxl]+$)(?:xl|l?x{0,3})(?:ix|iv|v?i{0,3})$")  # front matter: i to lxxxix
_LEADER = re.compile(r"[ \t]*(?:\.[ \t]?){3,}[ \t]*(?=\d{1,4}[ \t]*$)", re.MULTILINE)
_PAGE_REF = r"\d{1,4}[a-z]?(?:[–-]\d{1,4}[a-z]?)?"  # 41, 57–58, 324n
_REFERENCES = re.compile(rf"(?:^|[\s,.])(?:{_PAGE_REF}|[ivxlc]{{1,6}})\s*$")
_REFERENCE_LIST = re.compile(rf"^{_PAGE_REF}(?:,\s*{_PAGE_REF})*,?$")
_RANGE_OR_LIST = re.compile(r"[,–-]")


@dataclass(frozen=True)
class CleanPage:
    number: int
    text: str
    toc: bool = False  # a table of contents or an index: navigation, not an answer


def clean_pages(pages: Sequence[tuple[int, str]]) -> list[CleanPage]:
    """The text of each page (page number, extracted text) as a reader sees it: ligatures and odd spaces
    normalised, running headers, footers and page numbers removed, words hyphenated across lines joined;
    contents and index pages marked. Pages left without text are dropped."""
    numbers = [number for number, _ in pages]
    lines = [normalise_glyphs(text).split("\n") for _, text in pages]
    offsets = _page_offsets(numbers, lines)
    lines = _peel_running(lines)
    bodies = [_peel_page_numbers(number, page, offsets) for number, page in zip(numbers, lines, strict=True)]
    counts = word_counts("\n".join(body) for body in bodies)
    texts = _join_across_pages(numbers, ["\n".join(body).strip("\n") for body in bodies], counts)
    cleaned = []
    for number, text in zip(numbers, texts, strict=True):
        toc = _is_navigation(text)
        text = join_hyphenated(_LEADER.sub(" … ", text) if toc else text, counts)
        if text.strip():
            cleaned.append(CleanPage(number, text, toc))
    return cleaned


def _edges(page: list[str]) -> list[str]:
    """The first and last EDGE_LINES non-blank lines of a page."""
    filled = [line for line in page if line.strip()]
    return filled[:EDGE_LINES] + filled[EDGE_LINES:][-EDGE_LINES:]


def _line_key(line: str) -> str:
    """A line as its running-header family: case, spacing and numbers ("Chapter 3: … 42", "Preface xiii")
    ignored."""
    return _DIGITS.sub("#", _EDGE_ROMAN.sub("#", " ".join(line.split())).lower())


def _peel_running(pages: list[list[str]]) -> list[list[str]]:
    """Strip lines that repeat at the top or bottom of many pages, modulo their numbers, from both ends of every
    page, round after round: each round's removal uncovers the next layer (a print shop's slug, then a URL,
    then a layer of print marks), which must span a tenth of the document. A line family that occurs inside
    pages as often as at their edges ("Definition 12") is text, not a header."""
    anywhere = Counter(_line_key(line) for page in pages for line in page if line.strip())
    running: set[str] = set()
    for layer in range(100):  # a bound, never reached: each round strips at least one line or stops
        at_edges = Counter(key for page in pages for key in {_line_key(line) for line in _edges(page)})
        found = {key for key, n in at_edges.items() if key not in running and n * 2 >= anywhere[key]
                 and n >= _pages_needed(key, len(pages), layer)}
        if not found:
            return pages
        running |= found
        keys = frozenset(running)
        pages = [_strip_ends(page, lambda line, keys=keys: _line_key(line) in keys) for page in pages]
    return pages


def _pages_needed(key: str, total: int, layer: int) -> int:
    """On how many pages a line family must sit at the edge to be running: more without a number in it, and a
    tenth of the document for any layer under the first."""
    tenth = -(-total // 10)
    needed = RUNNING_MIN_PAGES if "#" in key else max(RUNNING_PLAIN_PAGES, tenth)
    return max(needed, tenth) if layer else needed


def _strip_ends(page: list[str], drop, limit: int | None = None) -> list[str]:  # noqa: ANN001
    """The page without the lines `drop` accepts at its top and bottom (blank lines go with them); at most
    `limit` such lines from each end."""
    start, end = 0, len(page)
    for step in (1, -1):
        taken = 0
        while start < end and (limit is None or taken < limit):
            line = page[start] if step == 1 else page[end - 1]
            if line.strip():
                if not drop(line):
                    break
                taken += 1
            if step == 1:
                start += 1
            else:
                end -= 1
    return page[start:end]


def _edge_number(line: str) -> int | None:
    """The number a header or footer line starts or ends with ("Chapter 3: Basic Shell Features 42", "- 7 -",
    "Page 3 of 9"), if any."""
    match = _EDGE_NUMBER.search(_DASHES.sub("", line.strip()))
    return int(next(group for group in match.groups() if group)) if match else None


def _page_offsets(numbers: list[int], pages: list[list[str]]) -> set[int]:
    """Differences between a page's place in the file and the number printed on it that many pages share
    (front matter shifts them): how a page number is told from any other number at the edge of a page."""
    support: Counter[int] = Counter()
    for number, page in zip(numbers, pages, strict=True):
        printed = {_edge_number(line) for line in _edges(page)} - {None}
        support.update({number - value for value in printed})
    needed = max(RUNNING_MIN_PAGES, len(pages) // 10)
    return {offset for offset, n in support.items() if n >= needed}


def _peel_page_numbers(number: int, page: list[str], offsets: set[int]) -> list[str]:
    """The page without a page-number line at its top or bottom: a header or footer carrying this page's printed
    number (however its words vary: "Chapter 2: Definitions 4"), a bare roman numeral (front matter)."""
    def is_page_number(line: str) -> bool:
        value = _edge_number(line)
        return (value is not None and number - value in offsets) or bool(_ROMAN.match(line.strip()))

    return _strip_ends(page, is_page_number, limit=1)


def _join_across_pages(numbers: list[int], texts: list[str], counts: Counter[str]) -> list[str]:
    """A word hyphenated from the foot of one page to the head of the next becomes whole on the first page."""
    texts = list(texts)
    for i in range(len(texts) - 1):
        if numbers[i + 1] != numbers[i] + 1:
            continue
        tail = re.search(r"(?<![-\w])([^\W\d_]+)-$", texts[i])
        head = re.match(r"([^\W\d_]+)(?![-\w])", texts[i + 1])
        if tail and head and hyphen_is_a_break(tail.group(1), head.group(1), counts):
            texts[i] = texts[i][:-1] + head.group(1)
            texts[i + 1] = texts[i + 1][head.end():].lstrip()
    return texts


def _is_navigation(text: str) -> bool:
    """A table of contents (dot leaders before page numbers) or an index (most entries end in page references,
    a wrapped entry's "130–31, 236" included; a bare "7", as in a column of line numbers, is no entry)."""
    entries = [line.strip() for line in text.split("\n")
               if _WORD.search(line) or _REFERENCE_LIST.match(line.strip()) and _RANGE_OR_LIST.search(line)]
    if len(entries) < TOC_MIN_LINES:
        return False
    leaders = sum(1 for line in entries if _LEADER.search(line))
    references = sum(1 for line in entries if _REFERENCES.search(line) or _REFERENCE_LIST.match(line))
    return leaders >= TOC_LEADER_SHARE * len(entries) or references >= TOC_REFERENCE_SHARE * len(entries)
