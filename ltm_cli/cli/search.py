"""`ltm search …`: hybrid retrieval with citations."""

from __future__ import annotations

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, renderer, state


def citation(location: dict, source: str) -> str:
    """Where a passage came from: page N, a heading path, or METHOD /path."""
    if "method" in location:
        return f"{location['method']} {location['path']}"
    if "page" in location:
        return f"page {location['page']}"
    if location.get("heading"):
        return location["heading"]
    if "line" in location:
        return f"line {location['line']}"
    return ""


def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to look for, in natural language or keywords."),
    limit: int = typer.Option(10, "--limit", "-n", help="How many results."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid (default), vector or keyword."),
    jsonl: bool = typer.Option(False, "--jsonl", help="One JSON object per line."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Search reference memory: vector similarity and full-text, fused (reciprocal rank fusion)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s, jsonl=jsonl)
    from ltm_cli.embedders import get_embedder
    from ltm_cli.services.search import search as run

    config = s.config()
    hits = run(s.db(), get_embedder(config), config.store, query, mode=mode, limit=limit)

    def human(rows) -> None:
        if not rows:
            out.message("no results")
            return
        from rich.markup import escape

        for hit in rows:
            where = citation(hit.location, hit.source)
            title = hit.title or hit.source
            out.out.print(f"[bold]{hit.rank}.[/bold] [cyan]{escape(title)}[/cyan]"
                          f"{' — ' + escape(where) if where else ''}  [dim]{hit.score:.4f}[/dim]")
            snippet = escape(" ".join(hit.snippet.split())).replace("«", "[bold yellow]").replace("»", "[/]")
            out.out.print(f"   {snippet}")
            out.out.print(f"   [dim]{escape(hit.source)}[/dim]")

    out.data(hits, human)
