"""What loaders produce: a document of Sections, each a run of text blocks with one location."""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class LoadError(Exception):
    """This one file cannot be ingested (corrupt, encrypted, no text…); the others go on."""


@dataclass(frozen=True)
class Section:
    """Blocks that belong together (a page, a heading's body, an operation), with where they came from.

    Blocks are paragraphs, code blocks or tables: the chunker packs whole blocks and splits one only when
    it alone exceeds the budget. `heading` is the context path shown and weighted in search
    ("Install > Linux > Docker"); `location` is stored as JSON on every chunk (page, heading, operation…).
    """

    blocks: list[str]
    heading: str | None = None
    location: dict[str, Any] = field(default_factory=dict)
    atomic: bool = False  # keep as one chunk when it fits (an API operation)


@dataclass
class LoadedDocument:
    media_type: str
    title: str | None
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # shown with --verbose, counted always
    notices: list[str] = field(default_factory=list)  # always shown (e.g. pages with no text layer)


@dataclass(frozen=True)
class LoadOptions:
    passwords: tuple[str, ...] = ()
    page_timeout: float = 30.0


def paragraphs(text: str) -> list[str]:
    """Split on blank lines; collapse the line breaks inside a paragraph, keep the paragraph breaks."""
    blocks = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        block = raw.strip("\n")
        if block.strip():
            blocks.append(block.rstrip())
    return blocks


def utf16_bom(data: bytes) -> bool:
    """Whether `data` opens with a UTF-16 byte order mark (FF FE 00 00 is UTF-32 LE's, so not that)."""
    return data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) and not data.startswith(codecs.BOM_UTF32_LE)


# Typeset text as extractors give it back: ligature glyphs, spaces of every width, invisible characters, and words
# broken across lines. Cleaned, it matches what a user types (keyword search, snippets, the embedder's vocabulary).
_GLYPHS = str.maketrans({
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st",
    "\ufb06": "st",
    "\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u3000": " ",
    "\u2000": " ", "\u2001": " ", "\u2002": " ", "\u2003": " ", "\u2004": " ", "\u2005": " ", "\u2006": " ",
    "\u2008": " ", "\u205f": " ",
    "\x00": None, "\u00ad": None, "\u200b": None, "\u2060": None, "\ufeff": None,
})
_LINE_END_HYPHENS = re.compile(r"(?<=[^\W\d_])[\u00ad\u2010\u2011][ \t]*\n")  # soft/Unicode hyphen ending a line
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")  # between words only: a line's indentation is kept
_LETTERS = r"[^\W\d_]+"
_BROKEN_WORD = re.compile(rf"({_LETTERS})-\n({_LETTERS})")
_ANY_BREAK = re.compile(r"\S*-\n\S*")
_WORD_OR_COMPOUND = re.compile(rf"{_LETTERS}(?:-{_LETTERS})*")


def normalise_glyphs(text: str) -> str:
    """Ligatures spelled out (ﬁ -> fi), odd spaces made plain, runs of them inside a line made one, invisible
    characters dropped; a soft or Unicode hyphen ending a line becomes "-" so the word can be joined."""
    text = _LINE_END_HYPHENS.sub("-\n", text.replace("\r\n", "\n").replace("\r", "\n")).translate(_GLYPHS)
    return "\n".join(_INNER_SPACES.sub(" ", line).rstrip() for line in text.split("\n"))


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each word and each hyphenated compound occurs whole (lower case), words broken at a line end
    left out: the evidence `join_hyphenated` decides by."""
    counts: Counter[str] = Counter()
    for text in texts:
        for match in _WORD_OR_COMPOUND.finditer(_ANY_BREAK.sub(" ", text)):
            word = match.group().lower()
            counts[word] += 1
            if "-" in word:
                counts.update(word.split("-"))
    return counts


def hyphen_is_a_break(left: str, right: str, counts: Counter[str]) -> bool:
    """Whether "left-" at a line end and "right" on the next line are one word the typesetter hyphenated
    ("com-mand") rather than a compound that keeps its hyphen ("double-quoted", "non-zero")."""
    joined, compound = (left + right).lower(), f"{left}-{right}".lower()
    if counts[compound] > counts[joined]:
        return False
    if counts[joined]:
        return True
    # Never seen either way: two words of three letters or more that the document uses alone are a compound
    # ("digit-moves" in "[n]<&digit-" is not "digitmoves"); fragments such as "com" or "ex" never occur alone.
    return not (len(left) >= 3 and len(right) >= 3 and counts[left.lower()] and counts[right.lower()])


def join_hyphenated(text: str, counts: Counter[str]) -> str:
    """Join words hyphenated across line ends ("com-\nmand" -> "command"), keeping real compounds."""

    def join(match: re.Match[str]) -> str:
        start, end = match.start(), match.end()
        # a part of a longer compound ("--enable-\nstrict-posix-default", "most-\nrecently-killed") stays
        if (start and text[start - 1] == "-") or text[end:end + 1] == "-":
            return match.group()
        left, right = match.group(1), match.group(2)
        return left + right if hyphen_is_a_break(left, right, counts) else match.group()

    return _BROKEN_WORD.sub(join, text)
