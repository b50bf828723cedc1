"""What loaders produce: a document of Sections, each a run of text blocks with one location."""

from __future__ import annotations

import codecs
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
