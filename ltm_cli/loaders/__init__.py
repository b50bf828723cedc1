"""Loaders turn one file into Sections (text blocks + location); `load` picks one by file type."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from ltm_cli.errors import InvalidInputError
from ltm_cli.loaders.base import LoadedDocument, LoadError, LoadOptions, Section, utf16_bom

__all__ = ["LOADERS", "LoadedDocument", "LoadError", "LoadOptions", "Section", "detect", "load", "loader_for"]

Loader = Callable[[Path, bytes, LoadOptions], LoadedDocument]

TEXT_SUFFIXES = {
    ".txt", ".text", ".rst", ".adoc", ".org", ".log", ".csv", ".tsv", ".ini", ".cfg", ".conf", ".toml",
    ".py", ".js", ".ts", ".tsx", ".jsx", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cc", ".cpp", ".hpp",
    ".cs", ".rb", ".php", ".sh", ".bash", ".zsh", ".sql", ".swift", ".scala", ".lua", ".pl", ".r", ".m",
    ".info", ".tex", ".xml", ".properties",
}
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx", ".mkd"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
API_SUFFIXES = {".json", ".yaml", ".yml"}


_OPENAPI_KEY = re.compile(
    rb'(?m)^[ \t]*(?:openapi|swagger)[ \t]*:[ \t]*["\']?[23]\.|"(?:openapi|swagger)"\s*:\s*"[23]\.')


def detect(path: Path, head: bytes) -> str | None:
    """The loader kind for a file: pdf, markdown, openapi, html, text, or None (unsupported/binary).

    `head` is the file's content (all of it for .json/.yaml, whose kind can be decided only by a key)."""
    suffix = path.suffix.lower()
    if suffix == ".pdf" or head.startswith(b"%PDF-"):
        return "pdf"
    if utf16_bom(head):
        # Every other byte of ASCII in UTF-16 is NUL: judge (and look for keys in) the text, not its bytes.
        head = head.decode("utf-16", errors="replace").encode("utf-8")
    if b"\x00" in head[:8192]:
        return None
    if suffix in MARKDOWN_SUFFIXES:
        return "markdown"
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix in API_SUFFIXES:
        # A top-level openapi/swagger key anywhere: generated specs sort keys, so it may come last.
        return "openapi" if _OPENAPI_KEY.search(head) else "text"
    if suffix in TEXT_SUFFIXES or not suffix:
        return "text"
    return None


def _lazy(module: str, function: str) -> Callable[[], Loader]:
    """A factory that imports the loader only when asked for it (pypdf and yaml cost start-up time)."""

    def factory() -> Loader:
        return getattr(importlib.import_module(f"ltm_cli.loaders.{module}"), function)

    return factory


# Every kind `detect` can return, and the loader for it.
LOADERS: Mapping[str, Callable[[], Loader]] = {
    "pdf": _lazy("pdf", "load_pdf"),
    "markdown": _lazy("markdown", "load_markdown"),
    "openapi": _lazy("openapi", "load_openapi"),
    "html": _lazy("text", "load_html"),
    "text": _lazy("text", "load_text"),
}


def loader_for(kind: str) -> Loader:
    try:
        factory = LOADERS[kind]
    except KeyError:
        raise InvalidInputError(f"no loader for kind {kind!r}", hint=f"choose one of: {', '.join(LOADERS)}") from None
    return factory()


def load(path: Path, data: bytes, kind: str, options: LoadOptions | None = None) -> LoadedDocument:
    return loader_for(kind)(path, data, options or LoadOptions())
