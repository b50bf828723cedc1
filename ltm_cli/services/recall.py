"""`ltm recall`: the best hits as one Markdown block an LLM can read, within a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError

if TYPE_CHECKING:
    from ltm_cli.services.search import Hit

MIN_OVERLAP = 12  # characters: shorter common edges are coincidence, not chunk overlap


@dataclass
class Passage:
    number: int
    kind: str
    citation: str
    text: str
    tokens: int  # of the whole block: citation, source line and text
    hit_ids: list[int] = field(default_factory=list)
    source: str | None = None
    location: dict[str, Any] = field(default_factory=dict)
    conversation_id: str | None = None
    # what merging needs
    _doc: int | None = None
    _ordinals: list[int] = field(default_factory=list)
    _turns: dict[int, str] = field(default_factory=dict)


@dataclass
class Recall:
    query: str
    budget: int
    tokens: int
    passages: list[Passage]
    markdown: str
    warnings: list[str] = field(default_factory=list)  # the searches' (a store that does not exist, rows
    # without a vector for this embedder): the block may be missing what the user expects


def merge_overlapping(first: str, second: str) -> str:
    """Join two neighbouring chunks, dropping the text the second repeats from the end of the first."""
    longest = min(len(first), len(second))
    for size in range(longest, MIN_OVERLAP - 1, -1):
        if first.endswith(second[:size]):
            return first + second[size:]
    return first.rstrip() + "\n\n" + second.lstrip()


LONG_WORD = 100  # characters: WordPiece reads a longer word as one [UNK] token
CHARS_PER_TOKEN = 4  # what an LLM's tokenizer spends on such text (hex, base64, minified code), about


def _count(text: str) -> int:
    """Tokens of `text` for the budget: the model's WordPiece count, with each word over LONG_WORD characters
    counted by its length instead (100,000 hex digits were one token, and blew any budget)."""
    from ltm_cli.embedders.base import count_tokens

    long_words = [len(w) for w in text.split() if len(w) > LONG_WORD]
    return count_tokens([text])[0] + sum(-(-n // CHARS_PER_TOKEN) - 1 for n in long_words)


def _doc_citation(hit: Hit) -> str:
    from ltm_cli.services.search import citation

    where = citation(hit.location)
    name = hit.title or (hit.source or "").rsplit("/", 1)[-1]
    return f"{name} — {where}" if where else name


def _turn_line(turn: dict[str, Any]) -> str:
    """One turn as a Markdown bullet: who, when, what was said, the tool it called and how that turned out."""
    import json

    who = turn.get("name") or turn["role"]
    when = turn["created_at"].strftime("%Y-%m-%d %H:%M UTC") if turn.get("created_at") else ""
    said = " ".join(turn["content"].split())
    line = f"- **{who}** ({when}):{' ' + said if said else ''}"
    if turn.get("tool_name"):
        args = json.dumps(turn["tool_args"], ensure_ascii=False) if turn.get("tool_args") is not None else ""
        line += f" → `{turn['tool_name']}({args})`"
    if turn.get("tool_result"):
        line += f" ← {' '.join(str(turn['tool_result']).split())[:300]}"
    if turn.get("outcome"):
        note = f" — {turn['outcome_note']}" if turn.get("outcome_note") else ""
        line += f" _(outcome: {turn['outcome']}{note})_"
    return line


def _render_turns(turns: dict[int, str]) -> str:
    return "\n".join(turns[seq] for seq in sorted(turns))


def _clip(text: str, tokens: int) -> str:
    """Cut text to about `tokens` tokens on a word boundary; a word too long to fit whole is cut inside."""
    words = text.split(" ")
    low, high = 0, len(words)
    while low < high:
        mid = (low + high + 1) // 2
        if _count(" ".join(words[:mid])) <= tokens:
            low = mid
        else:
            high = mid - 1
    kept = " ".join(words[:low])
    room = tokens - (_count(kept) if kept else 0)
    if low < len(words) and room > 1 and len(words[low]) > LONG_WORD:
        kept = f"{kept} {words[low][:(room - 1) * CHARS_PER_TOKEN]}".lstrip()
    return kept + " …"


def recall(query: str, hits: Sequence[Hit], *, budget: int = 1500, include_toc: bool = False) -> Recall:
    """Greedy by rank: each hit joins the passage of its neighbour (same document and adjacent chunk, or
    same conversation) or starts a new one, as long as the whole block stays within `budget` tokens.
    Contents and index chunks (`location.toc`) are left out unless `include_toc`: a list of page numbers
    answers nothing and would spend the budget."""
    if budget < 50:
        raise InvalidInputError("--budget must be at least 50 tokens")
    if not include_toc:
        hits = [hit for hit in hits if not hit.location.get("toc")]
    header = f"# Memory recalled for: {query}\n"
    used = _count(header)
    passages: list[Passage] = []
    for hit in hits:
        target = None
        if hit.kind == "docs":
            target = next((p for p in passages if p._doc == hit.document_id and any(
                abs(o - hit.ordinal) <= 1 for o in p._ordinals)), None)
        elif hit.kind == "history":
            target = next((p for p in passages if p.conversation_id == hit.conversation_id and any(
                abs(s - hit.seq) <= 1 + len(hit.context) for s in p._turns)), None)
        if target is not None:
            old_text, old_tokens = target.text, target.tokens
            if hit.kind == "docs":
                if hit.ordinal in target._ordinals:
                    continue
                target.text = (merge_overlapping(hit.text, target.text) if hit.ordinal < min(target._ordinals)
                               else merge_overlapping(target.text, hit.text))
                target._ordinals.append(hit.ordinal)
            else:
                for turn in hit.context or [_hit_turn(hit)]:
                    target._turns.setdefault(turn["seq"], _turn_line(turn))
                target.text = _render_turns(target._turns)
            target.tokens = _count(_block(target))
            if used - old_tokens + target.tokens > budget:
                target.text, target.tokens = old_text, old_tokens  # does not fit: keep the passage as it was
                if hit.kind == "docs":
                    target._ordinals.remove(hit.ordinal)
                continue
            used += target.tokens - old_tokens
            target.hit_ids.append(hit.id)
            continue
        passage = _new_passage(len(passages) + 1, hit)
        if used + passage.tokens > budget:
            room = budget - used - (passage.tokens - _count(passage.text)) - 5
            if passages or room < 40:
                continue
            passage.text = _clip(passage.text, room)  # the best hit alone is too long: give its start
            passage.tokens = _count(_block(passage))
        passages.append(passage)
        used += passage.tokens
    markdown = header + "".join(_block(p) for p in passages)
    if not passages:
        markdown += "\n_No stored memory matches this._\n"
    return Recall(query, budget, _count(markdown), passages, markdown)


def _hit_turn(hit: Hit) -> dict[str, Any]:
    return {"id": hit.id, "seq": hit.seq, "role": hit.role, "name": hit.name, "content": hit.text,
            "tool_name": hit.tool_name, "outcome": hit.outcome, "outcome_note": hit.outcome_note,
            "created_at": hit.created_at}


def _block(passage: Passage) -> str:
    """One passage as it appears in the block: numbered citation, where it came from, the text."""
    return f"\n## [{passage.number}] {passage.citation}\n{_source_line(passage)}\n{passage.text}\n"


def _source_line(passage: Passage) -> str:
    if passage.kind == "docs":
        return f"Source: `{passage.source}`\n"
    if passage.kind == "notes":
        return f"{passage.source}\n" if passage.source else ""
    return f"Conversation: `{passage.conversation_id}`\n"


def _note_sources(hit: Hit) -> str | None:
    parts = []
    if hit.source_messages:
        parts.append("messages " + ", ".join(str(i) for i in hit.source_messages))
    if hit.source_documents:
        parts.append("documents " + ", ".join(str(i) for i in hit.source_documents))
    return f"Sources: {'; '.join(parts)}" if parts else None


def _new_passage(number: int, hit: Hit) -> Passage:
    if hit.kind == "notes":
        when = hit.created_at.strftime("%Y-%m-%d") if hit.created_at else ""
        about = f" about {hit.about}" if hit.about else ""
        passage = Passage(number, "notes", f"note {hit.id}{about} ({when})", hit.text, 0, [hit.id],
                          _note_sources(hit))
    elif hit.kind == "docs":
        passage = Passage(number, "docs", _doc_citation(hit), hit.text, 0, [hit.id], hit.source, hit.location,
                          _doc=hit.document_id, _ordinals=[hit.ordinal])
    else:
        turns = {t["seq"]: _turn_line(t) for t in (hit.context or [_hit_turn(hit)])}
        when = hit.created_at.strftime("%Y-%m-%d") if hit.created_at else ""
        passage = Passage(number, "history", f"conversation {hit.conversation_id}, {when}", _render_turns(turns), 0,
                          [hit.id], conversation_id=hit.conversation_id, _turns=turns)
    passage.tokens = _count(_block(passage))
    return passage
