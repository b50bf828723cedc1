"""Search filters and the SQL WHERE clauses they become, shared by search, `history list` and `docs list`."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ltm_cli.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from ltm_cli.storage.stores import StoreRef

KINDS = ("docs", "history", "notes", "all")
# The kinds of memory each filter applies to; the first is the one to name when a filter is misplaced.
FILTER_KINDS = {"source": ("docs",), "tags": ("docs", "notes"), "role": ("history",), "outcome": ("history",),
                "conversation": ("history",), "about": ("notes",), "closed_notes": ("notes",)}
_PARENT = re.compile(r"\bp\.")


@dataclass(frozen=True)
class Filters:
    kind: str = "docs"
    source: str | None = None  # glob over document sources
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    role: str | None = None
    outcome: str | None = None
    conversation: str | None = None
    about: str | None = None  # notes about this subject (or below it: user matches user.prefs)
    closed_notes: bool = False  # include superseded and forgotten notes
    skip: tuple[str, ...] = ()  # kinds left out of "all" (recall searches notes on their own first)

    def kinds(self) -> tuple[str, ...]:
        """The kinds of memory these filters can match (each filter belongs to some kinds only)."""
        if self.kind not in KINDS:
            raise InvalidInputError(f"unknown kind {self.kind!r}", hint=f"use one of: {', '.join(KINDS)}")
        allowed = {"docs", "history", "notes"} - set(self.skip) if self.kind == "all" else {self.kind}
        for names, kinds, option in ((self.source, set(FILTER_KINDS["source"]), "--source"),
                                     (self.tags, set(FILTER_KINDS["tags"]), "--tag"),
                                     (self.role or self.outcome or self.conversation, set(FILTER_KINDS["role"]),
                                      "--role, --outcome and --conversation"),
                                     (self.about or self.closed_notes, set(FILTER_KINDS["about"]),
                                      "--about and --closed")):
            if not names:
                continue
            if not allowed & kinds:
                raise InvalidInputError(f"{option} filter {' and '.join(sorted(kinds))}" if self.kind != "all"
                                        else f"{option} cannot be combined with the other filters given",
                                        hint=f"add --kind {sorted(kinds)[0]}" if self.kind != "all" else None)
            allowed &= kinds
        return tuple(k for k in ("docs", "history", "notes") if k in allowed)


@dataclass(frozen=True)
class Corpus:
    """How one kind of memory is laid out: the searchable rows, their join for filters, their columns."""

    table: str
    join: str

    def join_for(self, where: Sequence[str]) -> str:
        """The parent join only when a clause reads the parent (`p.`): every leg query without such a filter
        skips a join per matching row."""
        return self.join if self.join and any(_PARENT.search(clause) for clause in where) else ""

    def where(self, filters: Filters, params: dict[str, Any], conn: Connection, sid: int) -> list[str]:
        """The filters as clauses on this corpus's rows (`x`) and their parent (`p`); fills `params`."""
        clauses = ["x.store_id = :store"]
        if self.table == "notes":
            if not filters.closed_notes:
                clauses.append("x.valid_until IS NULL")
            if filters.about:
                clauses.append("(x.about = :about OR starts_with(x.about, :about_dot))")
                params["about"], params["about_dot"] = filters.about, f"{filters.about}."
            if filters.tags:
                clauses.append("x.tags @> CAST(:tags AS text[])")
                params["tags"] = list(filters.tags)
            time_filters(clauses, params, "x.created_at", filters.since, filters.until)
            meta_column = "x.metadata"
        elif self.table == "chunks":
            if filters.source:
                clauses.append("(p.source LIKE :src ESCAPE '\\' OR p.source LIKE :src_any ESCAPE '\\')")
                params["src"], params["src_any"] = like(filters.source), "%/" + like(filters.source)
            if filters.tags:
                clauses.append("p.tags @> CAST(:tags AS text[])")
                params["tags"] = list(filters.tags)
            time_filters(clauses, params, "p.updated_at", filters.since, filters.until)
            meta_column = "p.metadata"
        else:
            message_filters(conn, sid, "x", clauses, params, conversation=filters.conversation, role=filters.role,
                            outcome=filters.outcome, since=filters.since, until=filters.until)
            meta_column = "x.metadata"
        if filters.meta:
            clauses.append(f"{meta_column} @> CAST(:meta AS jsonb)")
            params["meta"] = json.dumps(filters.meta, ensure_ascii=False)
        return clauses


CORPORA = {
    "docs": Corpus("chunks", "JOIN documents p ON p.id = x.document_id"),
    "history": Corpus("messages", "JOIN conversations p ON p.id = x.conversation_id"),
    "notes": Corpus("notes", ""),
}


def like(pattern: str) -> str:
    """A shell-style glob (*, ?) as a LIKE pattern."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def message_filters(conn: Connection, sid: int, alias: str, where: list[str], params: dict[str, Any], *,
                    conversation: str | None = None, role: str | None = None, outcome: str | None = None,
                    since: dt.datetime | None = None, until: dt.datetime | None = None,
                    store: StoreRef | None = None) -> None:
    """Add the clauses (on messages as `alias`) that `history list` and `search --kind history` share."""
    from ltm_cli.conversations import check_outcome, check_role

    if conversation:
        # history owns the conversation look-up and imports this module: imported here, when a filter needs it
        from ltm_cli.services.history import _find

        cid = _find(conn, sid, conversation)
        if cid is None:
            raise NotFoundError(f"no conversation {conversation!r}" + (f" in store {store.name!r}" if store else ""))
        where.append(f"{alias}.conversation_id = CAST(:conversation AS uuid)")
        params["conversation"] = str(cid)
    if role:
        where.append(f"{alias}.role = :role")
        params["role"] = check_role(role)
    if outcome:
        where.append(f"{alias}.outcome = :outcome")
        params["outcome"] = check_outcome(outcome)
    time_filters(where, params, f"{alias}.created_at", since, until)


def time_filters(where: list[str], params: dict[str, Any], column: str, since: dt.datetime | None,
                 until: dt.datetime | None) -> None:
    if since:
        where.append(f"{column} >= :since")
        params["since"] = since
    if until:
        where.append(f"{column} < :until")
        params["until"] = until
