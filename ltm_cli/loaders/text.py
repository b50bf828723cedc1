"""Plain text, source code and HTML (tags stripped)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from ltm_cli.loaders.base import LoadedDocument, LoadError, LoadOptions, Section, paragraphs, utf16_bom


def decode(data: bytes, path: Path) -> str:
    """Text from UTF-16 with a BOM, UTF-8 (with or without one) or Windows-1252; never a leading BOM."""
    if utf16_bom(data):
        # The BOM settles the encoding: one damaged code unit becomes U+FFFD, not a cp1252 reading full of NULs.
        return data.decode("utf-16", errors="replace").lstrip("\ufeff")
    try:
        return data.decode("utf-8-sig").lstrip("\ufeff")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path.name} is neither UTF-8, UTF-16 (with a BOM) nor Windows-1252 text") from exc


def load_text(path: Path, data: bytes, options: LoadOptions) -> LoadedDocument:
    text = decode(data, path).replace("\x00", "")
    blocks = paragraphs(text)
    if not blocks:
        raise LoadError("no text in file")
    first = blocks[0].splitlines()[0].strip()
    return LoadedDocument("text/plain", first[:120] or path.name, [Section(blocks)])


class _TextExtractor(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg"}
    BLOCK = {"p", "div", "section", "article", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre",
             "table", "ul", "ol", "blockquote", "header", "footer", "main", "nav"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: str | None = None
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title = (self.title or "") + data.strip()
            return
        self.parts.append(data)


def load_html(path: Path, data: bytes, options: LoadOptions) -> LoadedDocument:
    parser = _TextExtractor()
    parser.feed(decode(data, path))
    text = "".join(parser.parts)
    blocks = [" ".join(b.split()) for b in paragraphs(text)]
    blocks = [b for b in blocks if b]
    if not blocks:
        raise LoadError("no text in HTML file")
    return LoadedDocument("text/html", parser.title or path.name, [Section(blocks, heading=parser.title)])
