"""Markdown by structure (markdown-it-py): sections follow headings, blocks keep code and tables whole."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ltm_cli.loaders.base import LoadedDocument, LoadError, LoadOptions, Section
from ltm_cli.loaders.text import decode


def _front_matter(text: str) -> tuple[dict[str, Any], str, int]:
    """YAML front matter between --- lines -> (metadata, body, lines consumed)."""
    if not text.startswith("---"):
        return {}, text, 0
    lines = text.split("\n")
    for end in range(1, min(len(lines), 200)):
        if lines[end].strip() in ("---", "..."):
            import yaml

            try:
                meta = yaml.safe_load("\n".join(lines[1:end])) or {}
            except yaml.YAMLError:
                return {}, text, 0
            if not isinstance(meta, dict):
                return {}, text, 0
            return meta, "\n".join(lines[end + 1:]), end + 1
    return {}, text, 0


def load_markdown(path: Path, data: bytes, options: LoadOptions) -> LoadedDocument:
    from markdown_it import MarkdownIt

    text = decode(data, path).replace("\r\n", "\n").replace("\x00", "")
    meta, body, offset = _front_matter(text)
    lines = body.split("\n")
    tokens = MarkdownIt("commonmark").enable("table").parse(body)

    title = str(meta["title"]) if isinstance(meta.get("title"), (str, int, float)) else None
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    blocks: list[str] = []
    block_line = 1
    covered = 0

    def joined(levels: list[tuple[int, str]]) -> str:
        """The heading path; an empty heading (`#` alone) keeps its level but adds no blank segment."""
        return " > ".join(h for _, h in levels if h)

    def flush() -> None:
        if blocks:
            path_text = joined(stack) or title
            location = {"heading": joined(stack), "line": block_line} if joined(stack) else {"line": block_line}
            sections.append(Section(list(blocks), heading=path_text, location=location))
            blocks.clear()

    bare: list[int] = []  # [level, line] of the last heading while nothing has followed it yet

    def keep_bare_heading(next_level: int) -> None:
        """A heading with no text and no subheading under it is content: keep its words searchable."""
        if bare and next_level <= bare[0] and stack[-1][1]:
            sections.append(Section([stack[-1][1]], heading=joined(stack[:-1]) or title,
                                    location={"heading": joined(stack), "line": bare[1]}))
        bare.clear()

    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.type == "heading_open" and token.map and token.map[0] >= covered:
            flush()
            level = int(token.tag[1])
            keep_bare_heading(level)
            bare[:] = [level, token.map[0] + offset + 1]
            heading = _clean_heading(tokens[index + 1].content)
            if title is None and level == 1 and heading:
                title = heading
            stack = [h for h in stack if h[0] < level] + [(level, heading)]
            covered = token.map[1]
            block_line = token.map[1] + offset + 1
            index += 3
            continue
        if token.map and token.map[0] >= covered:  # a top-level block (its children lie inside its lines)
            start, end = token.map
            block = "\n".join(lines[start:end]).strip("\n")
            if block.strip():
                bare.clear()
                if not blocks:
                    block_line = start + offset + 1
                blocks.append(block)
            covered = end
        index += 1
    flush()
    keep_bare_heading(0)  # the document ends: any heading still bare is a leaf
    if not sections:
        raise LoadError("no text in Markdown file")
    return LoadedDocument("text/markdown", title or path.stem, sections,
                          metadata={k: v for k, v in meta.items() if _jsonable(v)})


_ANCHOR = re.compile(r"\s*\{\s*#[^}]*\}\s*$")  # "Install { #install }" (mkdocs attribute lists)
_EMPHASIS = re.compile(r"(\*\*|__|`)")


def _clean_heading(text: str) -> str:
    return " ".join(_EMPHASIS.sub("", _ANCHOR.sub("", text)).split())


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
