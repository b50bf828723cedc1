"""`ltm search …` and `ltm recall …`: hybrid retrieval with citations, and prompt-ready context."""

from __future__ import annotations

from typing import Any

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, renderer, state
from ltm_cli.render import local_time

LIMIT_OPTION = typer.Option(10, "--limit", "-n", help="How many results.")
MODE_OPTION = typer.Option("hybrid", "--mode", help="hybrid (default), vector or keyword.")
JSONL_OPTION = typer.Option(False, "--jsonl", help="One JSON object per line.")
SOURCE_OPTION = typer.Option(None, "--source", help="Documents whose source matches this glob.")
TAG_OPTION = typer.Option(None, "--tag", "-t", help="Documents with this tag (repeatable: all of them).")
META_OPTION = typer.Option(None, "--meta", "-m", help="key=value the metadata must contain (repeatable).")
SINCE_OPTION = typer.Option(None, "--since", help="At or after this time (documents: updated; messages: said): "
                                                   "ISO 8601, or a period back from now (2h, 7d, 6m, 1y).")
UNTIL_OPTION = typer.Option(None, "--until", help="Before this time (same forms as --since).")
ROLE_OPTION = typer.Option(None, "--role", help="Messages of this role: user, assistant, system, tool.")
OUTCOME_OPTION = typer.Option(None, "--outcome", help="Messages with this outcome: success, failure, partial, unknown.")
CONVERSATION_OPTION = typer.Option(None, "--conversation", "-c", help="Messages of this conversation.")
CONTEXT_OPTION = typer.Option(0, "--context", "-C", help="Show N turns before and after each message.")
DIVERSE_OPTION = typer.Option(False, "--diverse", help="Prefer varied results over near-duplicates (MMR; off by "
                                                       "default: it lowered nDCG on the benchmarks).")
INCLUDE_TOC_OPTION = typer.Option(False, "--include-toc", help="Treat chunks of PDF contents and index pages like "
                                                               "any other (by default search ranks them last and "
                                                               "recall leaves them out).")


def render_hits(out: Any, hits: list) -> None:
    """Hits for people: rank, where it came from, score, a snippet with the matched words highlighted."""
    if not hits:
        out.message("no results")
        return
    from rich.markup import escape

    from ltm_cli.services.search import citation

    for hit in hits:
        if hit.kind == "docs":
            where = citation(hit.location)
            head = f"[cyan]{escape(hit.title or hit.source)}[/cyan]{' — ' + escape(where) if where else ''}"
            foot = hit.source
        elif hit.kind == "notes":
            closed = f"  [red]closed {local_time(hit.valid_until)}[/]" if hit.valid_until else ""
            head = f"[green]note {hit.id}[/green]{' about ' + escape(hit.about) if hit.about else ''}{closed}"
            sources = [f"message {i}" for i in hit.source_messages] + [f"document {i}" for i in hit.source_documents]
            foot = local_time(hit.created_at) + (f" · from {', '.join(sources)}" if sources else "")
        else:
            who = hit.name or hit.role
            outcome = f"  [{'green' if hit.outcome == 'success' else 'red'}]{hit.outcome}[/]" if hit.outcome else ""
            head = f"[magenta]{escape(who)}[/magenta] in {escape(hit.conversation_id)} #{hit.seq}{outcome}"
            foot = local_time(hit.created_at) + (f" · note: {hit.outcome_note}" if hit.outcome_note else "")
        out.out.print(f"[bold]{hit.rank}.[/bold] {head}  [dim]{hit.score:.4f}[/dim]")
        snippet = escape(" ".join(hit.snippet.split())).replace("«", "[bold yellow]").replace("»", "[/]")
        if hit.context:
            for turn in hit.context:
                mark = "[bold]>[/bold]" if turn["id"] == hit.id else " "
                text = escape(" ".join(turn["content"].split())[:300])
                if turn.get("tool_name"):
                    text += f" [cyan]→ {escape(turn['tool_name'])}[/cyan]"
                if turn.get("outcome"):
                    text += f" [{'green' if turn['outcome'] == 'success' else 'red'}]({turn['outcome']})[/]"
                out.out.print(f" {mark} [dim]#{turn['seq']}[/dim] {escape(turn['name'] or turn['role'])}: {text}")
        else:
            out.out.print(f"   {snippet}")
        out.out.print(f"   [dim]{escape(foot)}[/dim]")


def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to look for, in natural language or keywords."),
    kind: str = typer.Option("docs", "--kind", "-k", help="docs (default), history, notes or all."),
    limit: int = LIMIT_OPTION,
    mode: str = MODE_OPTION,
    source: str = SOURCE_OPTION,
    tag: list[str] = TAG_OPTION,
    meta: list[str] = META_OPTION,
    since: str = SINCE_OPTION,
    until: str = UNTIL_OPTION,
    role: str = ROLE_OPTION,
    outcome: str = OUTCOME_OPTION,
    conversation: str = CONVERSATION_OPTION,
    about: str = typer.Option(None, "--about", help="Notes about this subject (and below it)."),
    closed: bool = typer.Option(False, "--closed", help="Include superseded and forgotten notes."),
    context: int = CONTEXT_OPTION,
    diverse: bool = DIVERSE_OPTION,
    include_toc: bool = INCLUDE_TOC_OPTION,
    jsonl: bool = JSONL_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Search memory: vector similarity and BM25 full-text, fused.

    Filters narrow the search itself: --limit results come back whenever that many match."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s, jsonl=jsonl)
    from ltm_cli.parsing import parse_meta

    hits = s.memory().search(query, kind=kind, mode=mode, limit=limit, source=source, tags=tag or (),
                             meta=parse_meta(meta), since=since, until=until, role=role, outcome=outcome,
                             conversation=conversation, about=about, closed=closed, context=context,
                             diverse=diverse, include_toc=include_toc)
    for warning in hits.warnings:  # stderr: --json and --jsonl stdout stay the array of hits
        out.warning(warning)
    out.data(hits, lambda rows: render_hits(out, rows))


def recall(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What the LLM is about to answer or do."),
    budget: int = typer.Option(1500, "--budget", "-b", help="Most tokens the context block may take."),
    kind: str = typer.Option("all", "--kind", "-k", help="all (default), docs, history or notes."),
    mode: str = MODE_OPTION,
    source: str = SOURCE_OPTION,
    tag: list[str] = TAG_OPTION,
    meta: list[str] = META_OPTION,
    since: str = SINCE_OPTION,
    until: str = UNTIL_OPTION,
    role: str = ROLE_OPTION,
    outcome: str = OUTCOME_OPTION,
    conversation: str = CONVERSATION_OPTION,
    context: int = typer.Option(1, "--context", "-C", help="Turns around each recalled message."),
    diverse: bool = DIVERSE_OPTION,
    include_toc: bool = INCLUDE_TOC_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """A prompt-ready Markdown context block: the best passages and turns within a token budget, each cited.

    Neighbouring chunks of one document are merged; --json gives the passages with their citations."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    from ltm_cli.parsing import parse_meta

    result = s.memory().recall(query, budget=budget, kind=kind, mode=mode, source=source, tags=tag or (),
                               meta=parse_meta(meta), since=since, until=until, role=role, outcome=outcome,
                               conversation=conversation, context=context, diverse=diverse,
                               include_toc=include_toc)
    for warning in result.warnings:
        out.warning(warning)
    out.data(result, lambda r: out.raw(r.markdown))
