"""`ltm ingest …`: add files, directories, globs or stdin to reference memory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, renderer, state
from ltm_cli.errors import ExitCode, InvalidInputError


def _password_map(path: Path | None) -> dict[str, str]:
    """Lines of `file<TAB>password` or `file=password` (# comments allowed)."""
    if path is None:
        return {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from exc
    mapping = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, password = line.partition("\t") if "\t" in line else line.partition("=")
        if not sep:
            raise InvalidInputError(f"{path}:{number}: expected 'file<TAB>password' or 'file=password'")
        mapping[name.strip()] = password.rstrip("\n")
    return mapping


def ingest(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., help="Files, directories (recursive), globs, or - for stdin."),
    include: list[str] = typer.Option(None, "--include", "-i", help="Only files matching this glob (repeatable)."),
    exclude: list[str] = typer.Option(None, "--exclude", "-x", help="Skip files matching this glob (repeatable)."),
    tag: list[str] = typer.Option(None, "--tag", "-t", help="Tag the documents (repeatable)."),
    meta: list[str] = typer.Option(None, "--meta", "-m", help="key=value metadata (repeatable)."),
    password: list[str] = typer.Option(None, "--password", help="Password for encrypted PDFs (repeatable)."),
    password_file: Path = typer.Option(None, "--password-file", help="Per-file passwords: 'file<TAB>password'."),
    name: str = typer.Option(None, "--name", help="Name of the document read from stdin."),
    force: bool = typer.Option(False, "--force", help="Re-read and re-embed even unchanged files."),
    max_file_size: str = typer.Option(None, "--max-file-size", metavar="SIZE",
                                      help="Larger files fail alone, unread (default 64MB, env LTM_MAX_INPUT_SIZE; "
                                           "also caps stdin)."),
    follow_symlinks: bool = typer.Option(False, "--follow-symlinks",
                                         help="Follow file links that lead out of a directory being walked."),
    sync: bool = typer.Option(False, "--sync", help="Also remove documents from under the named directories "
                                                     "whose files are gone (--dry-run lists them)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show loader warnings (e.g. pypdf's)."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Ingest PDFs, Markdown, OpenAPI specs and text: chunk, embed and store them (unchanged files are skipped).

    Exit code 1 when any file failed; every failure is listed."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    if "-" in paths and not name:
        name = "stdin"
    from ltm_cli.parsing import parse_meta, read_limited

    meta_values, passwords = parse_meta(meta), _password_map(password_file)
    with out.progress(transient=True) as bar:
        task = bar.add_task("ingesting", total=None, status="")
        totals = {"texts": 0, "seconds": 0.0}  # embedding rate so far

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "start":
                bar.update(task, total=info["files"])
            elif event == "file":
                bar.advance(task)
                bar.update(task, status=info["display"][-40:])
            elif event == "embedding":
                rate = f" · {totals['texts'] / totals['seconds']:.0f} chunks/s" if totals["seconds"] else ""
                bar.update(task, status=f"embedding {info['texts']} chunks{rate}")
            elif event == "embedded":
                totals["texts"] += info["texts"]
                totals["seconds"] += info["seconds"]
            elif event == "index":
                bar.update(task, status="building vector index")

        summary = s.memory().docs.ingest(
            paths, include=include or (), exclude=exclude or (), tags=tag or (), meta=meta_values,
            passwords=password or (), password_map=passwords, force=force, dry_run=dry_run,
            stdin=lambda limit: read_limited(sys.stdin.buffer, limit, "standard input"), stdin_name=name,
            follow_symlinks=follow_symlinks, max_file_size=max_file_size, sync=sync,
            progress=progress)
    if out.machine:
        out.data(summary)
    else:
        for result in summary.files:
            if result.status == "skipped":
                out.message(f"skipped {result.display}: {result.error}")
            for notice in result.notices:
                out.warning(f"{result.display}: {notice}")
            if verbose and result.warnings:
                for warning in result.warnings[:50]:
                    out.message(f"  {result.display}: {warning}")
            elif result.warnings:
                out.message(f"{result.display}: {len(result.warnings)} PDF warning(s) (--verbose shows them)")
        for result in summary.failed:
            out.error(f"{result.display}: {result.error}")
        for source in summary.removed:
            out.message(f"{'would remove' if dry_run else 'removed'} {source}: the file is gone")
        verb = "would ingest" if dry_run else "ingested"
        gone = f", {len(summary.removed)} {'to remove' if dry_run else 'removed'}" if sync else ""
        (out.warning if summary.failed else out.success)(
            f"{verb}: {summary.count('added')} added, {summary.count('updated')} updated, "
            f"{summary.count('unchanged')} unchanged, {summary.count('skipped')} skipped, "
            f"{len(summary.failed)} failed{gone}; {summary.chunks} chunks, {summary.embedded} "
            f"{'to embed' if dry_run else 'embedded'} ({summary.cached} cached) in {summary.seconds:.1f}s")
    if summary.failed:
        raise typer.Exit(ExitCode.FAILURE)
