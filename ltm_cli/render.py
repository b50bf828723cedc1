"""The only place that knows about tables, JSON, JSONL and colour. Data goes to stdout, the rest to stderr."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, (dt.date, uuid.UUID)):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, indent=indent)


def local_time(value: dt.datetime | None) -> str:
    """UTC in storage, local time for people."""
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


class Renderer:
    """Output for one command: format chosen by flags, colour only on a TTY and never with NO_COLOR."""

    def __init__(self, *, json_output: bool = False, jsonl: bool = False, quiet: bool = False) -> None:
        self.json = json_output
        self.jsonl = jsonl
        self.quiet = quiet
        self._out = None
        self._err = None

    @property
    def machine(self) -> bool:
        return self.json or self.jsonl

    @property
    def out(self) -> Any:
        if self._out is None:
            from rich.console import Console

            self._out = Console(soft_wrap=True, highlight=False)
        return self._out

    @property
    def err(self) -> Any:
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    # -- data (stdout) -----------------------------------------------------------------------------------
    def data(self, value: Any, human: Callable[[Any], None] | None = None) -> None:
        """Print a result: JSON for machines, `human(value)` (or plain text) for people."""
        if self.jsonl and isinstance(value, (list, tuple)):
            for item in value:
                sys.stdout.write(dumps(item, indent=None) + "\n")
        elif self.machine:
            sys.stdout.write(dumps(value) + "\n")
        elif human is not None:
            human(value)
        else:
            sys.stdout.write(f"{value}\n")
        sys.stdout.flush()

    def raw(self, text: str) -> None:
        """Exact text to stdout, no markup, no wrapping (values meant for $(…) in shells)."""
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def table(self, rows: Sequence[dict[str, Any]], columns: Sequence[str], *, title: str | None = None,
              empty: str = "nothing to show") -> None:
        if not rows:
            self.message(empty)
            return
        from rich.table import Table

        table = Table(title=title, show_edge=False, header_style="bold")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in columns))
        self.out.print(table)

    def pairs(self, items: Iterable[tuple[str, Any]]) -> None:
        from rich.table import Table

        table = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for key, value in items:
            table.add_row(key, _cell(value))
        self.out.print(table)

    # -- messages (stderr) -------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text, markup=False)

    def success(self, text: str) -> None:
        if not self.quiet:
            self.err.print(f"[green]✓[/green] {_escape(text)}")

    def warning(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {_escape(text)}")

    def error(self, text: str, hint: str | None = None) -> None:
        self.err.print(f"[red]error:[/red] {_escape(text)}")
        if hint:
            self.err.print(f"[dim]hint: {_escape(hint)}[/dim]")

    def progress(self, *, transient: bool = True) -> Any:
        """A Rich progress bar on stderr; a silent stand-in when stderr is not a terminal or --quiet."""
        if self.quiet or not self.err.is_terminal:
            return _NoProgress()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                        console=self.err, transient=transient)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _cell(value: Any) -> str:
    from rich.markup import escape

    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return local_time(value)
    if isinstance(value, (dict, list)):
        return escape(json.dumps(to_jsonable(value), ensure_ascii=False))
    return escape(str(value))


class _NoProgress:
    """The Progress interface, doing nothing (pipes, CI, --quiet)."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None
