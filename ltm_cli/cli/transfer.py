"""`ltm export` and `ltm import`: a whole store as one portable JSON Lines file."""

from __future__ import annotations

import sys

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, renderer, state
from ltm_cli.errors import ExitCode


def export(
    ctx: typer.Context,
    output: str = typer.Option(..., "--output", "-o", help="File to write (.gz: gzip), or - for stdout."),
    vectors: bool = typer.Option(False, "--vectors", help="Include the vectors (base64 float16)."),
    only: str = typer.Option(None, "--only", help="Comma-separated parts: settings,history,docs,notes."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Export a store: every settings version, conversation, document with its chunks, and note.

    One versioned JSON Lines file, streamed from one consistent snapshot; a file is written beside its
    destination and renamed into place, so it never appears half-written."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    parts = [p.strip() for p in only.split(",") if p.strip()] if only else None
    if output == "-" and out.machine:
        out.json = False  # stdout carries the export itself
    summary = s.memory().export(output, vectors=vectors, only=parts, stdout=sys.stdout.buffer)
    counts = ", ".join(f"{n} {kind}s" for kind, n in summary.records.items()) or "nothing"
    if out.machine:
        out.data(summary)
    else:
        out.success(f"exported {counts}" + (f", {summary.vectors} vectors" if vectors else "")
                    + (f" to {output}" if output != "-" else "") + f" in {summary.seconds:.1f}s")


def import_(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="A file made by `ltm export` (gzip or not), or - for stdin."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be added; write nothing."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Import an export into a store. Importing the same file again adds nothing.

    Each conversation, document and note is written whole or not at all. Vectors in the file are reused when
    they were made by the configured embedder, else recomputed. A damaged line is reported with its number and
    skipped, the rest imported (exit code 1). A file cut short or corrupt (a truncated .gz) keeps the whole
    records before the damage and says after which line it stopped (exit code 1); unreadable before its first
    line, nothing is imported (exit code 4)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
    summary = s.memory().import_(file, dry_run=dry_run, stdin=stdin)
    name = "standard input" if file == "-" else file
    if out.machine:
        out.data(summary)
    else:
        for problem in summary.problems:
            where = f"{name}:{problem['line']}" if problem["line"] else name
            out.error(f"{where}: {problem['message']}")
        for conflict in summary.conflicts:
            out.error(f"{name}:{conflict['line']}: {conflict['kind']} {conflict['key']}: {conflict['message']}")
        added = ", ".join(f"{n} {k}s" for k, n in summary.added.items()) or "nothing"
        unchanged = sum(summary.unchanged.values())
        verb = "would add" if dry_run else "added"
        line = f"{verb} {added}; {unchanged} already present"
        if summary.conflicts or summary.problems:
            line += f"; {len(summary.conflicts)} conflicting, {len(summary.problems)} bad"
        (out.warning if summary.failed else out.success)(line)
        if not dry_run:
            stored = f", {summary.vectors_stored} already stored" if summary.vectors_stored else ""
            out.message(f"vectors {summary.vector_source}: {summary.vectors_reused} reused, "
                        f"{summary.vectors_computed} computed{stored}; {summary.chunks} chunks in "
                        f"{summary.seconds:.1f}s")
    if summary.failed:
        raise typer.Exit(ExitCode.FAILURE)
