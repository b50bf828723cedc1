"""Sections -> Chunks within a token budget, whole blocks when possible, overlapping neighbours."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ltm_cli.loaders.base import Section

_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+(?=\S)")
MAX_HEADING_CHARS = 200

TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str
    heading: str | None
    location: dict[str, Any] = field(default_factory=dict)
    token_count: int = 0

    @property
    def embed_text(self) -> str:
        """What gets embedded: the heading path gives a chunk its context ("Install > Docker")."""
        return f"{self.heading}\n\n{self.text}" if self.heading else self.text


def _split_block(block: str, tokens: int, limit: int, count: TokenCounter) -> list[tuple[str, int]]:
    """Cut one over-long block into pieces of at most `limit` tokens: sentences, else lines, else windows."""
    if tokens <= limit:
        return [(block, tokens)]
    pieces = _SENTENCE_END.split(block) if "\n" not in block.strip() else block.split("\n")
    if len(pieces) == 1:
        return _windows(block, limit)
    counts = count(pieces)
    out: list[tuple[str, int]] = []
    joiner = "\n" if "\n" in block.strip() else " "
    current, current_tokens = [], 0
    for piece, n in zip(pieces, counts, strict=True):
        if n > limit:
            if current:
                out.append((joiner.join(current), current_tokens))
                current, current_tokens = [], 0
            out.extend(_windows(piece, limit))
        elif current_tokens + n > limit and current:
            out.append((joiner.join(current), current_tokens))
            current, current_tokens = [piece], n
        else:
            current.append(piece)
            current_tokens += n
    if current:
        out.append((joiner.join(current), current_tokens))
    return [(text, n) for text, n in out if text.strip()]


def _windows(text: str, limit: int) -> list[tuple[str, int]]:
    """Hard cut by token offsets (a run-on line, a minified blob), a bounded slice of the text at a time."""
    from ltm_cli.embedders.base import COUNT_BATCH_CHARS, _slices, bert_tokenizer

    out = []
    carry = ""  # the end of a slice that did not fill a window: it starts the next slice's first window
    for part in _slices(text, COUNT_BATCH_CHARS):
        part = carry + part
        offsets = bert_tokenizer().encode(part, add_special_tokens=False).offsets
        carry = ""
        for start in range(0, len(offsets), limit):
            window = offsets[start:start + limit]
            if len(window) < limit and start + limit >= len(offsets):
                carry = part[window[0][0]:]
                break
            piece = part[window[0][0]:window[-1][1]]
            if piece.strip():
                out.append((piece, len(window)))
    if carry.strip():
        n = len(bert_tokenizer().encode(carry, add_special_tokens=False).ids)
        out.append((carry.strip(), n))
    return out


def chunk_sections(sections: Sequence[Section], *, target: int, overlap: int, max_tokens: int,
                   count: TokenCounter | None = None) -> list[Chunk]:
    """Pack each section's blocks into chunks of about `target` tokens (never more than the embedder takes)."""
    if count is None:
        from ltm_cli.embedders.base import count_tokens

        count = count_tokens
    chunks: list[Chunk] = []
    headings = [(s.heading or "")[:MAX_HEADING_CHARS] or None for s in sections]
    heading_tokens = count([h or "" for h in headings])
    for section, heading, h_tokens in zip(sections, headings, heading_tokens, strict=True):
        hard = max(16, max_tokens - h_tokens - 2)  # room for the heading and the separator
        limit = max(16, min(target, hard))
        blocks = [b for b in section.blocks if b.strip()]
        if not blocks:
            continue
        block_tokens = count(blocks)
        total = sum(block_tokens)
        if section.atomic and total <= hard:
            chunks.append(Chunk(len(chunks), "\n\n".join(blocks), heading, dict(section.location), total))
            continue
        units: list[tuple[str, int]] = []
        for block, n in zip(blocks, block_tokens, strict=True):
            units.extend(_split_block(block, n, limit, count))
        for text, n in _pack(units, limit, overlap):
            chunks.append(Chunk(len(chunks), text, heading, dict(section.location), n))
    return chunks


def _pack(units: list[tuple[str, int]], limit: int, overlap: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    current: list[tuple[str, int]] = []
    size = 0
    fresh = 0  # units in `current` not carried over from the previous chunk
    for unit in units:
        if current and size + unit[1] > limit:
            out.append(("\n\n".join(u[0] for u in current), size))
            carried: list[tuple[str, int]] = []
            carried_size = 0
            for previous in reversed(current):
                if carried_size + previous[1] > overlap or carried_size + previous[1] + unit[1] > limit:
                    break
                carried.insert(0, previous)
                carried_size += previous[1]
            current, size, fresh = carried, carried_size, 0
        current.append(unit)
        size += unit[1]
        fresh += 1
    if current and fresh:
        out.append(("\n\n".join(u[0] for u in current), size))
    return out
