"""`ltm history …`: conversation memory — turns, tool calls and their outcomes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, confirm, renderer, state, warn_if_no_store
from ltm_cli.cli.search import (
    CONVERSATION_OPTION,
    DIVERSE_OPTION,
    JSONL_OPTION,
    LIMIT_OPTION,
    META_OPTION,
    MODE_OPTION,
    OUTCOME_OPTION,
    ROLE_OPTION,
    SINCE_OPTION,
    UNTIL_OPTION,
    render_hits,
)
from ltm_cli.errors import ExitCode, InvalidInputError
from ltm_cli.parsing import read_text
from ltm_cli.render import local_time

app = typer.Typer(help="Conversation memory: add turns and outcomes, import, list, show, search, export.",
                  no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    text: str = typer.Argument(None, help="The message text, or - to read it from stdin."),
    role: str = typer.Option("user", "--role", "-r", help="user, assistant, system or tool."),
    conversation: str = typer.Option(None, "--conversation", "-c", envvar="LTM_CONVERSATION",
                                     help="Conversation id, made on first use (env LTM_CONVERSATION)."),
    new: bool = typer.Option(False, "--new", help="Start a new conversation; prints its id."),
    title: str = typer.Option(None, "--title", help="Title of a conversation this starts."),
    name: str = typer.Option(None, "--name", help="Who said it (a person's or an agent's name)."),
    tool: str = typer.Option(None, "--tool", help="Name of the tool this turn called."),
    args: str = typer.Option(None, "--args", help="The tool's arguments, as JSON."),
    result: str = typer.Option(None, "--result", help="What the tool returned."),
    outcome: str = typer.Option(None, "--outcome", help="success, failure, partial or unknown."),
    note: str = typer.Option(None, "--note", help="Why it worked or failed."),
    meta: list[str] = typer.Option(None, "--meta", "-m", help="key=value metadata to keep (repeatable)."),
    at: str = typer.Option(None, "--at", help="When it was said (ISO 8601); default now."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Record one turn. Prints the message id (with --new: the new conversation's id).

    It is embedded before the command returns, so `ltm history search` finds it at once."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    from ltm_cli.parsing import parse_meta
    from ltm_cli.services import history as svc

    source = ctx.get_parameter_source("conversation")
    if new and source is not None and source.name == "ENVIRONMENT":
        conversation = None  # LTM_CONVERSATION does not fight an explicit --new
    content = read_text(text, s.config().max_input_size) if text == "-" else text
    if content is None and not tool:
        raise InvalidInputError("no message text", hint="give TEXT, or - to read it from stdin")
    tool_args = None
    if args is not None:
        try:
            tool_args = json.loads(args)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"--args is not valid JSON: {exc.msg} at character {exc.pos}") from None
    added = s.memory().history.add(content or "", role=role, conversation=conversation, new=new, title=title,
                                   name=name, tool=tool, args=tool_args, result=result, outcome=outcome, note=note,
                                   meta=parse_meta(meta), at=at)

    def human(a: svc.Added) -> None:
        out.raw(a.conversation_id if new else str(a.message_id))
        if new:
            out.message(f"message {a.message_id} starts conversation {a.conversation_id}")
        elif a.new_conversation:
            out.message(f"started conversation {a.conversation_id}")

    out.data(added, human)


@app.command("outcome")
def outcome_(
    ctx: typer.Context,
    message_id: int = typer.Argument(..., help="The message whose outcome is now known."),
    outcome: str = typer.Argument(..., help="success, failure, partial or unknown."),
    note: str = typer.Option(None, "--note", help="Why it worked or failed."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Record how an action turned out, after the fact."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    message = s.memory().history.outcome(message_id, outcome, note)
    out.data(message, lambda m: out.success(f"message {m.id}: {m.outcome}"))


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(..., help="OpenAI chat JSON/JSONL, a `role: text` transcript, or - for stdin."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Import conversations. Re-importing adds nothing; a conversation that grew gets its new turns.

    JSON: {"messages": [...]} or a list of them; JSONL: one conversation per line; anything else is read as a
    transcript of `role: text` lines. Bad lines are reported and skipped (exit code 1), the rest imported."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    from ltm_cli.conversations import parse

    name = "standard input" if file == "-" else file
    conversations, problems = parse(read_text(file, s.config().max_input_size), name)
    with out.progress(transient=True) as bar:
        task = bar.add_task("importing", total=len(conversations), status="")

        embedded = {"messages": 0}

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "conversation":
                bar.advance(task)
            elif event == "embedded":
                embedded["messages"] += info["texts"]
                bar.update(task, status=f"embedded {embedded['messages']} messages")

        summary = s.memory().history.import_(conversations, progress=progress)
    summary.problems[:0] = problems
    if out.machine:
        out.data(summary)
    else:
        for problem in summary.problems:
            out.error(f"{name}:{problem.line}: {problem.message}")
        for conv in summary.conversations:
            if conv.status == "conflict":
                out.error(f"{name}:{conv.line}: conversation {conv.conversation_id}: {conv.error}")
        line = (f"imported: {summary.count('added')} added, {summary.count('appended')} appended, "
                f"{summary.count('unchanged')} unchanged, {summary.count('conflict')} conflicting, "
                f"{len(summary.problems)} bad; {summary.messages} messages")
        (out.warning if summary.problems or summary.count("conflict") else out.success)(line)
    if summary.problems or summary.count("conflict"):
        raise typer.Exit(ExitCode.FAILURE)


def _limit(value: int) -> int | None:
    """`-n 0` means all; a negative count is refused."""
    from ltm_cli.parsing import check_range

    return check_range("--limit", value, 0) or None


def _message_rows(messages: list) -> list[dict[str, Any]]:
    return [{"id": m.id, "time": local_time(m.created_at), "conversation": m.conversation_id[:36], "#": m.seq,
             "who": m.name or m.role, "outcome": m.outcome or "",
             "text": " ".join((m.content or (f"[{m.tool_name}]" if m.tool_name else "")).split())[:80]}
            for m in messages]


@app.command("list")
def list_(
    ctx: typer.Context,
    conversation: str = CONVERSATION_OPTION,
    since: str = SINCE_OPTION,
    until: str = UNTIL_OPTION,
    role: str = ROLE_OPTION,
    outcome: str = OUTCOME_OPTION,
    limit: int = typer.Option(50, "--limit", "-n", help="The most recent N messages (0: all)."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Recent messages, oldest first, with their outcomes."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    rows = s.memory().history.list(conversation=conversation, since=since, until=until, role=role,
                                   outcome=outcome, limit=_limit(limit))
    warn_if_no_store(s, out, rows)
    out.data(rows, lambda r: out.table(_message_rows(r), ["id", "time", "conversation", "#", "who", "outcome",
                                                          "text"], empty="no messages"))


@app.command("conversations")
def conversations(
    ctx: typer.Context,
    since: str = typer.Option(None, "--since", help="Active at or after this time: ISO 8601 or a period back (7d)."),
    limit: int = typer.Option(50, "--limit", "-n", help="The most recent N (0: all)."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Conversations, most recently active first."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    rows = s.memory().history.conversations(since=since, limit=_limit(limit))
    warn_if_no_store(s, out, rows)
    out.data(rows, lambda r: out.table(
        [{"id": c.id, "title": (c.title or "")[:40], "messages": c.messages, "started": local_time(c.created_at),
          "last": local_time(c.updated_at)} for c in r], ["id", "title", "messages", "started", "last"],
        empty="no conversations"))


@app.command("show")
def show(
    ctx: typer.Context,
    conversation: str = typer.Argument(..., help="Conversation id."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """A conversation as a readable transcript (--json: its raw messages)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    info, messages = s.memory().history.show(conversation)

    def human(_: Any) -> None:
        from rich.markup import escape

        out.out.print(f"[bold]{escape(info.title or info.id)}[/bold]  [dim]{info.id} · {len(messages)} messages · "
                      f"{local_time(info.created_at)} – {local_time(info.updated_at)}[/dim]")
        for m in messages:
            who = escape(m.name or m.role)
            outcome = f"  [{'green' if m.outcome == 'success' else 'red'}]{m.outcome}" \
                      f"{' — ' + escape(m.outcome_note) if m.outcome_note else ''}[/]" if m.outcome else ""
            out.out.print(f"\n[dim]#{m.seq} {local_time(m.created_at)} (id {m.id})[/dim] [bold]{who}[/bold]"
                          f"{outcome}")
            if m.content:
                out.out.print(escape(m.content), highlight=False)
            if m.tool_name:
                args = json.dumps(m.tool_args, ensure_ascii=False) if m.tool_args is not None else ""
                out.out.print(f"[cyan]→ {escape(m.tool_name)}[/cyan]({escape(args)})", highlight=False)
            if m.tool_result:
                out.out.print(f"[cyan]←[/cyan] {escape(m.tool_result)}", highlight=False)

    out.data({"conversation": info, "messages": messages}, human)


@app.command("rm")
def rm(
    ctx: typer.Context,
    conversations: list[str] = typer.Argument(..., help="Conversation ids."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Delete conversations with all their messages."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    confirm(f"Delete conversation(s) {', '.join(conversations)}?", yes=yes,
            refusal="refusing to delete conversations without confirmation")
    removed = s.memory().history.rm(conversations)
    out.data({"removed": removed}, lambda v: out.success(f"deleted {len(v['removed'])} conversation(s)"))


@app.command("prune")
def prune(
    ctx: typer.Context,
    before: str = typer.Option(..., "--before",
                               help="Delete conversations last active before this: a date or a period back (180d)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; delete nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Delete whole conversations whose last message is older than --before."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    from ltm_cli.parsing import parse_time

    cutoff = parse_time(before)
    doomed = s.memory().history.prune(cutoff, dry_run=True)
    if not dry_run and doomed:
        confirm(f"Delete {len(doomed)} conversation(s) last active before {local_time(cutoff)}?", yes=yes,
                refusal="refusing to prune without confirmation")
        doomed = s.memory().history.prune(cutoff)
    verb = "would delete" if dry_run else "deleted"
    out.data({"dry_run": dry_run, "conversations": doomed}, lambda v: (
        [out.message(f"  {c.id}  {c.messages} messages, last {local_time(c.updated_at)}") for c in doomed],
        out.success(f"{verb} {len(doomed)} conversation(s)")))


@app.command("search")
def search(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="What to look for."),
    limit: int = LIMIT_OPTION,
    mode: str = MODE_OPTION,
    conversation: str = CONVERSATION_OPTION,
    role: str = ROLE_OPTION,
    outcome: str = OUTCOME_OPTION,
    meta: list[str] = META_OPTION,
    since: str = SINCE_OPTION,
    until: str = UNTIL_OPTION,
    context: int = typer.Option(1, "--context", "-C", help="Turns shown before and after each hit (0: none)."),
    diverse: bool = DIVERSE_OPTION,
    jsonl: bool = JSONL_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Search past conversations (same retrieval as `ltm search --kind history`).

    `--outcome failure` answers "what went wrong last time I did X"."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s, jsonl=jsonl)
    from ltm_cli.parsing import parse_meta

    hits = s.memory().history.search(query, mode=mode, limit=limit, conversation=conversation, role=role,
                                     outcome=outcome, meta=parse_meta(meta), since=since, until=until,
                                     context=context, diverse=diverse)
    out.data(hits, lambda rows: render_hits(out, rows))


@app.command("export")
def export(
    ctx: typer.Context,
    conversation: str = typer.Option(None, "--conversation", "-c", help="Only this conversation."),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    store: str = STORE_OPTION,
) -> None:
    """Conversations as JSONL (OpenAI chat format plus ltm's fields); `ltm history import` reads it back."""
    s = state(ctx, store=store)
    from ltm_cli.render import dumps

    lines = [dumps(c, indent=None) + "\n" for c in s.memory().history.export(conversation)]
    if output is None:
        sys.stdout.write("".join(lines))
        return
    from ltm_cli.parsing import atomic_output

    with atomic_output(output) as handle:  # never a half-written export
        handle.write("".join(lines).encode("utf-8"))
    renderer(s).success(f"exported {len(lines)} conversation(s) to {output}")


@app.command("embed")
def embed(
    ctx: typer.Context,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Embed messages that have no vector for the current embedder (after switching models)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    count = s.memory().history.embed()
    out.data({"embedded": count}, lambda v: out.success(f"embedded {v['embedded']} message(s)"))


@app.command("distill")
def distill(
    ctx: typer.Context,
    conversation: str = typer.Option(None, "--conversation", "-c", help="Only this conversation."),
    since: str = typer.Option(None, "--since",
                              help="Only turns said at or after this time: ISO 8601 or a period back (7d)."),
    limit: int = typer.Option(None, "--limit", "-n", help="At most this many turns."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the proposals; write nothing."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Distil turns (above all those with an outcome) into notes with a chat model.

    Needs LTM_CHAT_BASE_URL and LTM_CHAT_MODEL (any OpenAI-compatible endpoint; key LTM_CHAT_API_KEY or the
    embedding key). Each turn is read once; the model must answer in ltm's JSON schema, else exit 6 with
    nothing written. The prompt is ltm_cli/prompts/distill.md (LTM_DISTILL_PROMPT replaces it)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    summary = s.memory().history.distill(conversation=conversation, since=since, dry_run=dry_run, limit=limit)

    def human(v: Any) -> None:
        for p in v.proposals:
            what = f"supersede note {p.note_id}: " if p.action == "supersede" else f"add ({p.about or '-'}): "
            out.raw(f"{what}{p.text}" + (f"  → {p.applied}" if p.applied else ""))
        verb = "would apply" if v.dry_run else "applied"
        out.success(f"{v.turns} turn(s) read in {v.requests} request(s); {verb} {len(v.proposals)} proposal(s)")

    out.data(summary, human)
