"""What every command shares: the state built by the root callback, and the common options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from ltm_cli.render import Renderer

if TYPE_CHECKING:
    from ltm_cli.config import Config
    from ltm_cli.memory import Memory
    from ltm_cli.storage.engine import Database

JSON_OPTION = typer.Option(False, "--json", help="Print JSON on stdout (for scripts).")
STORE_OPTION = typer.Option(None, "--store", "-s", help="Memory store to use (env LTM_STORE; default: default).")


@dataclass
class AppState:
    """Built once per invocation; config and database are resolved only when a command needs them."""

    flags: dict[str, Any] = field(default_factory=dict)
    json: bool = False
    quiet: bool = False
    debug: bool = False
    _config: Config | None = None
    _memory: Memory | None = None

    def config(self) -> Config:
        if self._config is None:
            from ltm_cli.config import load_config

            self._config = load_config(self.flags)
        return self._config

    def memory(self) -> Memory:
        """The library object every command calls: one per invocation, for the resolved store."""
        if self._memory is None:
            from ltm_cli.memory import Memory

            self._memory = Memory(self.config())
        return self._memory

    def db(self) -> Database:
        return self.memory().db

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()


def state(ctx: typer.Context, *, json: bool = False, store: str | None = None) -> AppState:
    """The invocation's state, with this command's own --json/--store merged in."""
    app_state: AppState = ctx.find_root().obj
    if json:
        app_state.json = True
    if store:
        app_state.flags["store"] = store
        app_state._config = None
        if app_state._memory is not None:
            app_state._memory.close()
            app_state._memory = None
    return app_state


def warn_if_no_store(app_state: AppState, out: Renderer, found: Any) -> None:
    """An empty result from a store that does not exist says so on stderr (see stores.missing_store_warning)."""
    if not found and not app_state.memory().store_exists():
        from ltm_cli.storage.stores import missing_store_warning

        out.warning(missing_store_warning(app_state.memory().store_name))


def renderer(app_state: AppState, *, jsonl: bool = False) -> Renderer:
    return Renderer(json_output=app_state.json, jsonl=jsonl, quiet=app_state.quiet)


def confirm(question: str, *, yes: bool, refusal: str) -> None:
    """Ask before a destructive action; without a terminal, refuse unless --yes was given."""
    if yes:
        return
    import sys

    if not sys.stdin.isatty():
        from ltm_cli.errors import InvalidInputError

        raise InvalidInputError(refusal, hint="add --yes")
    typer.confirm(question, abort=True)
