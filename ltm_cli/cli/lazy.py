"""Start-up cost of the `ltm` command: command groups imported when first used, and plain option values
coerced without pydantic."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, get_args

import typer

# Command name -> (module in ltm_cli.cli, attribute: a Typer app or a command function), in the order `ltm --help`
# lists them (single commands, then groups, as typer orders them). Importing every module up front cost each
# command ~0.05 s; only the invoked one is imported now, and `--help` imports them all.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("ingest", "ingest"),
    "search": ("search", "search"),
    "recall": ("search", "recall"),
    "eval": ("eval_cmd", "eval_"),
    "export": ("transfer", "export"),
    "import": ("transfer", "import_"),
    "forget": ("forget", "forget"),
    "mcp": ("mcp", "mcp"),
    "db": ("db", "app"),
    "migrate": ("db", "migrate_app"),
    "history": ("history", "app"),
    "docs": ("docs", "app"),
    "note": ("notes", "app"),
    "settings": ("settings", "app"),
    "store": ("stores", "app"),
    "embed": ("embed", "app"),
    "config": ("config_cmd", "app"),
    "tools": ("mcp", "tools_app"),
}


def load_command(name: str, new_app: Callable[[], typer.Typer]) -> Any:
    """The click command for `name`, converted exactly as `app.add_typer` / `app.command` would have: through a
    throw-away app built with the root's settings (`new_app`), so help, markup and options come out the same."""
    module, attribute = COMMANDS[name]
    target = getattr(importlib.import_module(f"ltm_cli.cli.{module}"), attribute)
    holder = new_app()
    holder.callback()(_nothing)  # a callback makes typer build a group, whatever it holds
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name)(target)
    command = typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]
    plain_coercion(command)
    reflow_help(command)
    return command


def reflow_help(command: Any) -> None:
    """Join the lines of each paragraph of `command`'s help (and its subcommands'): typer's rich mode keeps a
    docstring's line breaks, so a help wrapped at 115 columns in the source came out ragged in any narrower
    terminal ("reused when" / "they were made…"). Paragraphs stay apart; the terminal's width wraps them."""
    if getattr(command, "help", None):
        command.help = "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines())
                                    for paragraph in command.help.split("\n\n"))
    for sub in getattr(command, "commands", {}).values():
        reflow_help(sub)


def _nothing() -> None:
    return None


# -- option values without pydantic -------------------------------------------------------------------------------
_ABSENT = object()


def _has_typer_coercion() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("typer._coercion") is not None  # found, not imported (pydantic is slow)
    except (ImportError, ValueError):
        return False


_TYPER_COERCION = _has_typer_coercion()


def plain_coercion(command: Any) -> None:
    """Give the parameters of `command` (and of its subcommands) the coercion below.

    Typer 0.2x coerces every parameter through a pydantic TypeAdapter, built for each parameter of the invoked
    command (--help and --install-completion included) even when its value is absent: pydantic's import and a
    dozen adapters cost ~0.1 s, a third of `ltm settings get`. The hook is `get_params`, through which click
    processes every parameter, help option included (made on first use). Typer versions without
    `_runtime_param`, or without the private module its fallback needs, are left as they are."""
    if not _TYPER_COERCION:
        return
    fetch = command.get_params

    def get_params(ctx: Any) -> list[Any]:
        params = fetch(ctx)
        for param in params:
            if getattr(param, "_runtime_param", _ABSENT) is None and hasattr(param, "type_descriptor"):
                param._runtime_param = PlainValues(param.type_descriptor)
        return params

    command.get_params = get_params
    for sub in getattr(command, "commands", {}).values():
        plain_coercion(sub)


class PlainValues:
    """Typer's coercion for the common values, the same result without pydantic: an absent value, a string for a
    `str` parameter, digits or an int for an `int`, strings for a `list[str]`. Any other value (a Path, a float,
    a bad number, a choice) goes to typer's own coercion, built on first need, so its errors are typer's."""

    __slots__ = ("descriptor", "_kind", "_typer")

    def __init__(self, descriptor: Any) -> None:
        self.descriptor = descriptor
        self._kind: Any = _ABSENT
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:  # as typer's RuntimeParam.coerce: absent is () for many-valued parameters
            return () if (param.multiple or param.nargs == -1) else None
        kind = self.kind
        if kind is str and type(value) is str:
            return value
        if kind is int:
            if type(value) is int:
                return value
            if type(value) is str and value.isascii() and value.isdigit():
                return int(value)
        if kind is list and isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
            return list(value)
        return self.typer.coerce(value, param=param, ctx=ctx)

    @property
    def kind(self) -> Any:
        """str, int or list (of str) when typer would only check the type; None for anything else."""
        if self._kind is _ABSENT:
            d = self.descriptor
            plain = (d.parameter_info.parser is None and d.file_annotation is None and not d.is_path
                     and not d.is_choice and not d.is_ranged)
            kind = None
            if plain and d.annotation in (str, int):
                kind = d.annotation
            elif plain and d.is_list and get_args(d.annotation) == (str,):
                kind = list
            self._kind = kind
        return self._kind

    @property
    def typer(self) -> Any:
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(self.descriptor)
        return self._typer
