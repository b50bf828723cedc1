"""`ltm forget`: delete everything derived from one origin, listed first."""

from __future__ import annotations

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, confirm, renderer, state, warn_if_no_store
from ltm_cli.render import Renderer, local_time
from ltm_cli.services.retention import Forgotten


def _list(out: Renderer, found: Forgotten) -> None:
    for d in found.documents:
        out.message(f"  document {d.id}  {d.source}  ({d.chunks} chunks)")
    for c in found.conversations:
        out.message(f"  conversation {c.id}  {c.messages} messages, last {local_time(c.updated_at)}")
    for n in found.notes:
        text = n.text if len(n.text) <= 60 else n.text[:59] + "…"
        out.message(f"  note {n.id}  {text}  ({'tagged' if n.why == 'tag' else 'derived from what goes'}"
                    f"{'' if n.live else ', closed'})")


def _counts(found: Forgotten) -> str:
    return (f"{len(found.documents)} document(s) ({sum(d.chunks for d in found.documents)} chunks), "
            f"{len(found.conversations)} conversation(s) ({sum(c.messages for c in found.conversations)} "
            f"messages), {len(found.notes)} note(s)")


def forget(
    ctx: typer.Context,
    source: str = typer.Option(None, "--source", metavar="GLOB",
                               help="Documents whose source path matches (* also crosses directories)."),
    conversation: str = typer.Option(None, "--conversation", "-c", metavar="ID", help="One conversation."),
    before: str = typer.Option(None, "--before", metavar="DATE",
                               help="Conversations whose last turn is older: a date, or a period (180d, 6m, 1y)."),
    tag: str = typer.Option(None, "--tag", "-t", help="Documents and notes with this tag."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would go."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Delete everything from one origin in one transaction: documents and their chunks, conversations and their
    turns, notes (tagged, or derived from what goes); then the vectors nothing else uses.

    Lists what would go and asks first; without a terminal, --yes is needed (else exit 4)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    memory = s.memory()
    options = {"source": source, "conversation": conversation, "before": before, "tag": tag}
    found = memory.forget(**options, dry_run=True)
    warn_if_no_store(s, out, not found.empty)
    if dry_run or found.empty:
        out.data(found, lambda v: (_list(out, v), out.success(
            f"would forget {_counts(v)}" if not v.empty else "nothing matches: nothing to forget")))
        return
    if not yes:
        _list(out, found)
        confirm(f"Forget {_counts(found)}?", yes=yes, refusal="refusing to forget without confirmation")
    done = memory.forget(**options, dry_run=False)

    def human(v: Forgotten) -> None:
        if yes:
            _list(out, v)
        out.success(f"forgot {_counts(v)}")
        if v.gc_refused:
            out.warning(f"unused vectors not collected ({v.gc_refused}); the rows are gone — run `ltm db gc` later")
        else:
            out.message(f"collected {v.vectors} unused vector(s)")

    out.data(done, human)
