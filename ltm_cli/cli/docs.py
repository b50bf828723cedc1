"""`ltm docs …`: the documents in reference memory."""

from __future__ import annotations

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, confirm, renderer, state, warn_if_no_store
from ltm_cli.render import local_time
from ltm_cli.services import documents as svc

app = typer.Typer(help="List, show and remove ingested documents.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    tag: str = typer.Option(None, "--tag", "-t", help="Only documents with this tag."),
    source: str = typer.Option(None, "--source", help="Only sources matching this glob."),
    limit: int = typer.Option(None, "--limit", "-n", help="At most this many."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Documents with their chunk counts."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    docs = s.memory().docs.list(tag=tag, source=source, limit=limit)
    warn_if_no_store(s, out, docs)
    out.data(docs, lambda rows: out.table(
        [{"id": d.id, "title": (d.title or "")[:50], "type": d.media_type.split("/")[-1], "chunks": d.chunks,
          "tags": ",".join(d.tags), "updated": local_time(d.updated_at), "source": d.source} for d in rows],
        ["id", "title", "type", "chunks", "tags", "updated", "source"], empty="no documents"))


@app.command("show")
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Document id, source path, or glob matching one source."),
    chunks: bool = typer.Option(False, "--chunks", help="Print every chunk's text too."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """One document: metadata and its chunks."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    detail = s.memory().docs.show(ref)

    def human(d: svc.DocumentDetail) -> None:
        doc = d.document
        out.pairs([("id", doc.id), ("title", doc.title), ("source", doc.source), ("type", doc.media_type),
                   ("chunks", doc.chunks), ("tags", ", ".join(doc.tags)), ("metadata", doc.metadata),
                   ("updated", local_time(doc.updated_at))])
        for chunk in d.chunks:
            where = ", ".join(f"{k} {v}" for k, v in chunk.location.items())
            out.out.print(f"[bold]#{chunk.ordinal}[/bold] {chunk.token_count} tokens  {where}", markup=True)
            if chunks:
                out.raw(chunk.text + "\n")

    out.data(detail, human)


@app.command("rm")
def rm(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(..., help="Document ids, source paths or globs."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Remove documents and their chunks."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    confirm(f"Remove {', '.join(refs)}?", yes=yes, refusal="refusing to remove documents without confirmation")
    removed = s.memory().docs.rm(refs)
    out.data({"removed": removed}, lambda v: out.success(f"removed {len(v['removed'])} document(s)"))
