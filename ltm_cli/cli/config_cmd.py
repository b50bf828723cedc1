"""`ltm config …`: the resolved configuration and where each value came from."""

from __future__ import annotations

import typer

from ltm_cli.cli.common import JSON_OPTION, renderer, state
from ltm_cli.config import describe

app = typer.Typer(help="Show the resolved configuration.", no_args_is_help=True)


@app.command("show")
def show(ctx: typer.Context, json: bool = JSON_OPTION) -> None:
    """Every option, its value (secrets masked) and its source: flag, env, file or default."""
    s = state(ctx, json=json)
    out = renderer(s)
    rows = describe(s.config())
    out.data(rows, lambda r: out.table(r, ["name", "value", "source", "env"]))
