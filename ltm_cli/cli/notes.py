"""`ltm note …`: durable facts and lessons, versioned by validity, with where each came from."""

from __future__ import annotations

from typing import Any

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, renderer, state, warn_if_no_store
from ltm_cli.render import local_time

app = typer.Typer(help="Notes: facts and lessons to remember — add, supersede, forget, list, show.",
                  no_args_is_help=True)

ABOUT_OPTION = typer.Option(None, "--about", "-a", help="Subject key, e.g. user or project.billing.")
BY_OPTION = typer.Option(None, "--by", help="Who wrote it (a person, an agent, `distill`).")
SOURCE_OPTION = typer.Option(None, "--source", help="A message id the note was drawn from (repeatable).")
DOC_OPTION = typer.Option(None, "--doc", help="A document id the note was drawn from (repeatable).")


def _line(n: Any) -> str:
    state_ = "" if n.valid_until is None else f"  [{n.closed_reason} {local_time(n.valid_until)}]"
    about = f"({n.about}) " if n.about else ""
    return f"#{n.id} {about}{n.text}{state_}"


@app.command("add")
def add(
    ctx: typer.Context,
    text: str = typer.Argument(..., help="The fact or lesson, in a sentence or two."),
    about: str = ABOUT_OPTION,
    tag: list[str] = typer.Option(None, "--tag", "-t", help="Tag (repeatable)."),
    meta: list[str] = typer.Option(None, "--meta", "-m", help="key=value metadata (repeatable)."),
    source: list[int] = SOURCE_OPTION,
    doc: list[int] = DOC_OPTION,
    by: str = BY_OPTION,
    force: bool = typer.Option(False, "--force", help="Add it even if a near-identical live note exists."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Remember a fact; prints the note id. A near-identical live note about the same subject is returned
    instead (say so) unless --force; the most similar live notes are listed, to supersede one if it is now
    wrong."""
    from ltm_cli.parsing import parse_meta

    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    done = s.memory().notes.add(text, about=about, tags=tag or (), meta=parse_meta(meta), sources=source or (),
                                documents=doc or (), by=by, force=force)

    def human(r: Any) -> None:
        out.raw(str(r.note.id))
        if not r.created:
            out.message(f"already remembered as note {r.note.id} (--force adds it anyway)")
        for similar in r.similar[:3]:
            if similar.note.id != r.note.id:
                out.message(f"similar ({similar.similarity:.2f}): {_line(similar.note)}")

    out.data(done, human)


@app.command("supersede")
def supersede(
    ctx: typer.Context,
    note_id: int = typer.Argument(..., help="The note that is no longer true."),
    text: str = typer.Argument(..., help="What is true now."),
    about: str = typer.Option(None, "--about", "-a", help="A new subject (default: the old note's)."),
    source: list[int] = SOURCE_OPTION,
    doc: list[int] = DOC_OPTION,
    by: str = BY_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Replace a note: the old one is closed (valid until now, superseded by the new one); prints the new id."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    old, new = s.memory().notes.supersede(note_id, text, by=by, about=about, sources=source or (),
                                          documents=doc or ())
    out.data({"old": old, "new": new}, lambda v: (out.raw(str(new.id)),
                                                   out.message(f"note {old.id} superseded by note {new.id}")))


@app.command("forget")
def forget(
    ctx: typer.Context,
    note_id: int = typer.Argument(...),
    reason: str = typer.Option(..., "--reason", "-r", help="Why it is no longer believed (kept)."),
    purge: bool = typer.Option(False, "--purge", help="Delete it for good instead of closing it."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Close a note with a reason (`list --all` and `--at` still show it); --purge deletes it."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    note = s.memory().notes.forget(note_id, reason, purge=purge)
    out.data({"note": note, "purged": purge},
             lambda v: out.success(f"note {note.id} {'purged' if purge else 'forgotten'}"))


@app.command("list")
def list_(
    ctx: typer.Context,
    about: str = ABOUT_OPTION,
    tag: str = typer.Option(None, "--tag", "-t", help="Only notes with this tag."),
    all_: bool = typer.Option(False, "--all", help="Include superseded and forgotten notes."),
    at: str = typer.Option(None, "--at", help="What was believed at this time (ISO 8601)."),
    limit: int = typer.Option(None, "--limit", "-n", help="At most this many."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Live notes, newest first (--all: closed ones too; --at: those live at a time)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    notes = s.memory().notes.list(about=about, tag=tag, all=all_, at=at, limit=limit)
    warn_if_no_store(s, out, notes)
    out.data(notes, lambda rows: out.table(
        [{"id": n.id, "about": n.about or "", "note": n.text[:90], "since": local_time(n.created_at),
          "until": local_time(n.valid_until) if n.valid_until else "", "by": n.author or ""} for n in rows],
        ["id", "about", "note", "since", "until", "by"], empty="no notes"))


@app.command("show")
def show(
    ctx: typer.Context,
    note_id: int = typer.Argument(...),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """A note, its chain (what it replaced, what replaced it) and its sources with their text."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    detail = s.memory().notes.show(note_id)

    def human(d: Any) -> None:
        n = d.note
        out.pairs([("note", n.id), ("text", n.text), ("about", n.about), ("tags", ", ".join(n.tags)),
                   ("by", n.author), ("valid", f"{local_time(n.created_at)} – "
                                               f"{local_time(n.valid_until) if n.valid_until else 'now'}"),
                   ("closed", n.closed_reason)])
        for old in d.replaced:
            out.out.print(f"[dim]replaced[/dim] {_escape(_line(old))}")
        for new in d.replaced_by:
            out.out.print(f"[dim]replaced by[/dim] {_escape(_line(new))}")
        for source in d.sources:
            where = f" ({source.where})" if source.where else ""
            text = source.text if source.text is not None else "(no longer stored)"
            out.out.print(f"[dim]{source.kind} {source.id}{_escape(where)}:[/dim] {_escape(text[:300])}")

    out.data(detail, human)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
