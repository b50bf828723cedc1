"""`ltm embed …`: a store's embedding spaces, and moving its memory to another embedder without losing any."""

from __future__ import annotations

from typing import Any

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, confirm, renderer, state

app = typer.Typer(help="Embedding spaces: which embedders a store has vectors for, and migrating to another.",
                  no_args_is_help=True)

_COLUMNS = ["space", "provider", "model", "dim", "active", "chunks", "messages", "notes"]


@app.command("status")
def status(ctx: typer.Context, store: str = STORE_OPTION, json: bool = JSON_OPTION) -> None:
    """Each embedding space of the store (provider, model, dim, active or not) with the chunks, messages and
    notes that have a vector in it, and how many have none in the active space (the store's `embedding.space`
    setting when it was switched, else the configured embedder)."""
    s = state(ctx, json=json, store=store)
    out = renderer(s)

    def human(st: Any) -> None:
        rows = [{"space": u.space_id if u.space_id is not None else "-", "provider": u.provider, "model": u.model,
                 "dim": u.dim, "active": "yes" if u.active else "", "chunks": u.chunks, "messages": u.messages,
                 "notes": u.notes} for u in st.spaces]
        rows.append({"space": "total", **st.totals})
        out.table(rows, _COLUMNS, title=f"store {st.store}")
        lacking = {k: n for k, n in st.missing.items() if n}
        if lacking:
            out.warning(f"{', '.join(f'{n} {k}' for k, n in lacking.items())} have no vector for {st.active}: "
                        f"search finds them by keyword only; run `{st.fix}`")
        else:
            out.success(f"every chunk, message and note has a vector for {st.active}")
        if st.source:
            out.message(f"active: {st.active}, from the {st.source}")

    out.data(s.memory().embed_status(), human)


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    to: str = typer.Option(None, "--to", help="Target embedder: local, hash, openai or openai:MODEL "
                                              "(default: the configured one)."),
    dimensions: int = typer.Option(None, "--dimensions", help="Vector size of the target (openai, hash)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count the texts and tokens to embed."),
    batch: int = typer.Option(None, "--batch", help="Rows embedded and committed at a time (default 256)."),
    store: str = STORE_OPTION,
    json: bool = JSON_OPTION,
) -> None:
    """Embed every chunk, message and note that lacks a vector in the target space.

    Each batch is committed: interrupted, run it again and it continues. Searches keep using the configured
    store's active space meanwhile; `ltm embed switch` to the target afterwards to search in it."""
    s = state(ctx, json=json, store=store)
    out = renderer(s)

    def tick(event: str, info: dict[str, Any]) -> None:
        if event == "migrated":
            out.message(f"  {info['rows']} {info['kind']}: {info['computed']} vector(s) computed")

    def human(r: Any) -> None:
        rows = ", ".join(f"{n} {k}" for k, n in r.rows.items() if n) or "nothing"
        if r.dry_run:
            out.raw(f"would embed {r.texts} text(s), about {r.tokens} token(s), for {rows} of store {r.store} "
                    f"into {r.target}")
        else:
            out.success(f"{rows} of store {r.store} embedded into {r.target}: {r.computed} vector(s) computed, "
                        f"{r.cached} already cached")
        if r.skipped:
            out.warning(f"{r.skipped} row(s) skipped: their stored hash does not match their text")

    out.data(s.memory().embed_migrate(to=to, dimensions=dimensions, dry_run=dry_run, batch=batch,
                                      progress=None if s.json else tick), human)


@app.command("switch")
def switch(
    ctx: typer.Context,
    to: str = typer.Argument(None, metavar="PROVIDER[:MODEL]",
                             help="local, hash, openai or openai:MODEL (default: the configured embedder)."),
    dimensions: int = typer.Option(None, "--dimensions", help="Vector size of the space (openai, hash)."),
    back: bool = typer.Option(False, "--back", help="Return to the space active before the last switch."),
    force: bool = typer.Option(False, "--force", help="Switch even when rows have no vector in that space."),
    note: str = typer.Option(None, "--note", help="Why (kept in the setting's history)."),
    by: str = typer.Option(None, "--by", help="Who switched (a person, an agent, a script)."),
    store: str = STORE_OPTION,
    json: bool = JSON_OPTION,
) -> None:
    """Make a space the store's active one (setting embedding.space; `ltm settings history embedding.space`
    shows who switched when). Refused (exit 7) while rows lack a vector there: run `ltm embed migrate --to …`
    first, or add --force."""
    if back and (to or dimensions is not None):
        from ltm_cli.errors import InvalidInputError

        raise InvalidInputError("--back takes no PROVIDER or --dimensions")
    s = state(ctx, json=json, store=store)
    out = renderer(s)

    def human(r: Any) -> None:
        if r.changed:
            out.success(f"store {r.store} now searches and embeds in {r.space}")
        else:
            out.success(f"store {r.store} already uses {r.space}")
        lacking = {k: n for k, n in r.lacking.items() if n}
        if lacking:
            out.warning(f"{', '.join(f'{n} {k}' for k, n in lacking.items())} have no vector there: "
                        "search finds them by keyword only until `ltm embed migrate` embeds them")

    out.data(s.memory().embed_switch(to, dimensions=dimensions, back=back, force=force, note=note, by=by), human)


@app.command("drop")
def drop(
    ctx: typer.Context,
    space: str = typer.Argument(..., metavar="SPACE_ID|PROVIDER:MODEL", help="The space (see `ltm embed status`)."),
    dimensions: int = typer.Option(None, "--dimensions", help="Which size, when PROVIDER:MODEL has several."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    json: bool = JSON_OPTION,
) -> None:
    """Delete a space's vectors and its HNSW index. Refused (exit 7) for the active space of any store."""
    s = state(ctx, json=json)
    out = renderer(s)

    def ask(found: Any) -> None:
        confirm(f"Drop space {found.space_id}, {found.space}, with {found.vectors} vector(s)?", yes=yes,
                refusal="refusing to drop an embedding space without confirmation")

    def human(r: Any) -> None:
        out.success(f"dropped space {r.space_id}, {r.space}: {r.vectors} vector(s)"
                    + (" and its HNSW index" if r.index else ""))

    out.data(s.memory().embed_drop(space, dimensions=dimensions, confirm=ask), human)
