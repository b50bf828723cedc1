"""Sections -> Chunks within a token budget, whole blocks when possible, overlapping neighbours."""

from __future__ import annotations

import re
from bisect import bisect_left
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


def _split_block(block: str, tokens: int, limit: int, count: TokenCounter,
                 starts: Sequence[int] | None = None) -> list[tuple[str, int]]:
    """Cut one over-long block into pieces of at most `limit` tokens: sentences, else lines, else windows.
    With `starts` (where the block's tokens start) the pieces are counted from those, not tokenized again."""
    if tokens <= limit:
        return [(block, tokens)]
    spans = _piece_spans(block, by_line="\n" in block.strip())
    if len(spans) == 1:
        return _windows(block, limit)
    pieces = [block[a:b] for a, b in spans]
    counts = count(pieces) if starts is None else [bisect_left(starts, b) - bisect_left(starts, a) for a, b in spans]
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


def _piece_spans(block: str, *, by_line: bool) -> list[tuple[int, int]]:
    """Where block.split("\\n") (by_line) or _SENTENCE_END.split(block) cut it, as (start, end) offsets.
    Every cut is at whitespace, and WordPiece never puts a token across whitespace, so a piece's tokens are
    exactly the block's tokens that start inside its span."""
    cuts = [(m.start(), m.end()) for m in (re.finditer("\n", block) if by_line else _SENTENCE_END.finditer(block))]
    spans, start = [], 0
    for cut_start, cut_end in cuts:
        spans.append((start, cut_start))
        start = cut_end
    spans.append((start, len(block)))
    return spans


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
    from ltm_cli.embedders.base import count_tokens, count_tokens_with_starts

    if count is None:
        # One tokenization per block: an over-long block's token offsets count its sentences as well.
        count, measure = count_tokens, count_tokens_with_starts
    else:
        custom = count
        measure = lambda blocks, keep_over: [(n, None) for n in custom(blocks)]  # noqa: E731
    chunks: list[Chunk] = []
    headings = [(s.heading or "")[:MAX_HEADING_CHARS] or None for s in sections]
    heading_tokens = count([h or "" for h in headings])
    for section, heading, h_tokens in zip(sections, headings, heading_tokens, strict=True):
        hard = max(16, max_tokens - h_tokens - 2)  # room for the heading and the separator
        limit = max(16, min(target, hard))
        blocks = [b for b in section.blocks if b.strip()]
        if not blocks:
            continue
        measured = measure(blocks, limit)
        total = sum(n for n, _ in measured)
        if section.atomic and total <= hard:
            chunks.append(Chunk(len(chunks), "\n\n".join(blocks), heading, dict(section.location), total))
            continue
        units: list[tuple[str, int]] = []
        for block, (n, starts) in zip(blocks, measured, strict=True):
            units.extend(_split_block(block, n, limit, count, starts))
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
