"""`ltm store …`: the stores in the database, as a whole."""

from __future__ import annotations

import typer

from ltm_cli.cli.common import JSON_OPTION, confirm, renderer, state
from ltm_cli.render import local_time
from ltm_cli.services.stores import StoreInfo

app = typer.Typer(help="List, create, rename, copy and remove memory stores.", no_args_is_help=True)

YES_OPTION = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
_COLUMNS = ["name", "settings", "conversations", "messages", "documents", "chunks", "notes", "created"]


def _row(info: StoreInfo) -> dict:
    return {**info.__dict__, "created": local_time(info.created_at)}


def _contents(info: StoreInfo) -> str:
    return (f"{info.settings} setting(s), {info.conversations} conversation(s) with {info.messages} message(s), "
            f"{info.documents} document(s) with {info.chunks} chunk(s), {info.notes} live note(s)")


@app.command("list")
def list_(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Every store with its counts: settings keys, conversations, messages, documents, chunks, live notes."""
    s = state(ctx, json=json)
    out = renderer(s)
    out.data(s.memory().stores.list(), lambda rows: out.table([_row(r) for r in rows], _COLUMNS,
                                                                empty="no stores yet"))


@app.command("create")
def create(ctx: typer.Context, name: str = typer.Argument(..., help="The new store's name."),
           json: bool = JSON_OPTION) -> None:
    """Create an empty store (exit 7 if it exists). Any write to a store also creates it."""
    s = state(ctx, json=json)
    out = renderer(s)
    out.data(s.memory().stores.create(name), lambda v: out.success(f"created store {v.name}"))


@app.command("rename")
def rename(ctx: typer.Context, old: str = typer.Argument(..., help="The store's name."),
           new: str = typer.Argument(..., help="Its new name."), yes: bool = YES_OPTION,
           json: bool = JSON_OPTION) -> None:
    """Rename a store, atomically. Onto an existing name, that store is replaced: asks first unless --yes."""
    from ltm_cli.errors import ConflictError

    s = state(ctx, json=json)
    out = renderer(s)
    stores = s.memory().stores
    try:
        done = stores.rename(old, new, replace=yes)
    except ConflictError:
        if yes:
            raise
        existing = stores.get(new)
        confirm(f"Store {new} exists ({_contents(existing)}). Delete it and rename {old} to {new}?", yes=False,
                refusal=f"refusing to replace store {new!r} without confirmation")
        done = stores.rename(old, new, replace=True)

    def human(v) -> None:
        if v.replaced is not None:
            out.success(f"removed store {v.new} ({_contents(v.replaced)})")
        out.success(f"renamed store {v.old} to {v.new}")

    out.data(done, human)


@app.command("copy")
def copy(ctx: typer.Context, source: str = typer.Argument(..., help="The store to copy."),
         target: str = typer.Argument(..., help="A new store's name (exit 7 if it exists)."),
         json: bool = JSON_OPTION) -> None:
    """Copy every row of a store into a new one, in one transaction, reusing the stored vectors."""
    s = state(ctx, json=json)
    out = renderer(s)
    out.data(s.memory().stores.copy(source, target),
             lambda v: out.success(f"copied store {v.source} to {v.target.name}: {_contents(v.target)}"))


@app.command("rm")
def rm(ctx: typer.Context, name: str = typer.Argument(..., help="The store to delete."), yes: bool = YES_OPTION,
       json: bool = JSON_OPTION) -> None:
    """Delete a store and everything in it; `ltm db gc` then frees the vectors nothing else uses."""
    s = state(ctx, json=json)
    out = renderer(s)
    stores = s.memory().stores
    info = stores.get(name)  # an unknown store is exit 3 before any question
    confirm(f"Delete store {name} ({_contents(info)})?", yes=yes,
            refusal=f"refusing to delete store {name!r} without confirmation")
    done = stores.rm(name)
    out.data(done, lambda v: (out.success(f"deleted store {v.store.name} ({_contents(v.store)})"),
                              out.message("run `ltm db gc` to free the vectors nothing else uses")))
