"""`ltm settings …`: versioned settings the LLM was asked to change, with their history."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from ltm_cli.cli.common import JSON_OPTION, STORE_OPTION, renderer, state, warn_if_no_store
from ltm_cli.errors import InvalidInputError
from ltm_cli.parsing import (
    parse_time,  # noqa: F401 (re-exported for other command groups)
    read_text,
)
from ltm_cli.render import dumps, local_time
from ltm_cli.services import settings as svc

app = typer.Typer(help="Versioned settings: set, get, list, history, revert, import, export.",
                  no_args_is_help=True)

NOTE_OPTION = typer.Option(None, "--note", "-n", help="Why the value changed (kept in the history).")
BY_OPTION = typer.Option(None, "--by", help="Who changed it (a person, an agent, a script).")


def _print_value(out, value: Any) -> None:
    """Strings raw (so $(ltm settings get k) works), everything else as compact JSON."""
    if out.machine:
        out.data(value)
        return
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    sys.stdout.write(text)
    if sys.stdout.isatty() or not isinstance(value, str):
        sys.stdout.write("\n")
    sys.stdout.flush()


@app.command("set")
def set_(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Dotted key, e.g. voice.speed or prompts.system."),
    value: str = typer.Argument(None, help="Value: JSON when valid (1.2, true, [..]), else a string; - reads stdin."),
    file: Path = typer.Option(None, "--file", "-f", help="Read the value from this file."),
    string: bool = typer.Option(False, "--string", help="Keep the value as a string even if it is valid JSON."),
    force: bool = typer.Option(False, "--force", help="Record a new version even if the value is unchanged."),
    note: str = NOTE_OPTION,
    by: str = BY_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Set KEY to VALUE, keeping every earlier value in the history."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    if (value is None) == (file is None):
        raise InvalidInputError("give exactly one of VALUE, - (standard input) or --file PATH")
    source = str(file) if file is not None else ("-" if value == "-" else None)
    raw = read_text(source, s.config().max_input_size) if source is not None else value
    parsed = svc.parse_value(raw, force_string=string)
    if not string and isinstance(parsed, str) and parsed.lstrip()[:1] in ("{", "[", '"'):
        out.warning("the value looks like JSON but does not parse: it is stored as a string "
                    "(--string says you mean a string)")
    result = s.memory().settings.set(key, parsed, note=note, by=by, force=force)
    if out.machine:
        out.data(result)
    elif result.changed:
        out.success(f"{key} = {_short(result.value)} (version {result.version})")
    else:
        out.message(f"{key} unchanged (version {result.version}); use --force to record it again")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@app.command("get")
def get(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Key, or a group (returns the whole subtree as an object)."),
    default: str = typer.Option(None, "--default", help="Print this instead of failing when KEY is missing."),
    at: str = typer.Option(None, "--at", help="The value active at this time (ISO 8601)."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Print the active value of KEY (exit 3 when missing, unless --default)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    fallback = {} if default is None else {"default": svc.parse_value(default)}
    value = s.memory().settings.get(key, at=at, **fallback)
    _print_value(out, value)


@app.command("list")
def list_(
    ctx: typer.Context,
    prefix: str = typer.Argument(None, help="Only this key and the keys below it."),
    fmt: str = typer.Option("table", "--format", help="table, json, env or toml."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Active values."""
    s = state(ctx, json=json_out or fmt == "json", store=store)
    out = renderer(s)
    versions = s.memory().settings.list(prefix)
    if fmt not in ("table", "json", "env", "toml"):
        raise InvalidInputError(f"unknown format {fmt!r}", hint="use table, json, env or toml")
    warn_if_no_store(s, out, versions)
    if out.machine:
        out.data([{"key": v.key, "value": v.value, "version": v.version, "updated_at": v.created_at,
                   "note": v.note, "by": v.author} for v in versions])
    elif fmt == "env":
        for v in versions:
            name = v.key.upper().replace(".", "_").replace("-", "_")
            text = v.value if isinstance(v.value, str) else json.dumps(v.value, ensure_ascii=False)
            out.raw(f"{name}={shlex.quote(text)}")
    elif fmt == "toml":
        out.raw(_to_toml({v.key: v.value for v in versions}))
    else:
        out.table([{"key": v.key, "value": _short(v.value), "version": v.version,
                    "updated": local_time(v.created_at), "by": v.author or ""} for v in versions],
                  ["key", "value", "version", "updated", "by"], empty="no settings")


@app.command("unset")
def unset(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Dotted key, e.g. voice.speed."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Unset every key of a group."),
    note: str = NOTE_OPTION,
    by: str = BY_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Remove KEY (the history keeps it and its old values)."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    removed = s.memory().settings.unset(key, recursive=recursive, note=note, by=by)
    out.data({"removed": removed}, lambda v: out.success(f"unset {', '.join(v['removed'])}"))


@app.command("history")
def history(
    ctx: typer.Context,
    key: str = typer.Argument(None, help="A key or group; all keys when omitted."),
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Every version, oldest first, with time, value, note and author."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    versions = s.memory().settings.history(key)
    out.data(versions, lambda rows: out.table(
        [{"time": local_time(v.created_at), "key": v.key, "version": v.version,
          "value": "(unset)" if v.deleted else _short(v.value), "note": v.note or "", "by": v.author or ""}
         for v in rows], ["time", "key", "version", "value", "note", "by"], empty="no history"))


@app.command("revert")
def revert(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="Dotted key, e.g. voice.speed."),
    to: int = typer.Option(None, "--to", help="The version to bring back."),
    at: str = typer.Option(None, "--at", help="Bring back the value active at this time (ISO 8601)."),
    force: bool = typer.Option(False, "--force", help="Record a new version even if the value is unchanged."),
    note: str = NOTE_OPTION,
    by: str = BY_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Write a new version equal to an old one (default: undo the last change); nothing when the key holds
    that value already, unless --force."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    result = s.memory().settings.revert(key, to=to, at=at, note=note, by=by, force=force)
    if out.machine:
        out.data(result)
    elif not result.changed:
        out.message(f"{key} unchanged (version {result.version}): it already holds that value; nothing recorded")
    else:
        out.success(f"{key} = {_short(result.value)} (version {result.version})")


def _format_of(path: str | None, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("json", "toml"):
            raise InvalidInputError(f"unknown format {fmt!r}", hint="use json or toml")
        return fmt
    return "toml" if path and path.lower().endswith(".toml") else "json"


def _to_toml(flat: dict[str, Any]) -> str:
    import tomli_w

    nulls = [k for k, v in flat.items() if _holds_null(v)]
    if nulls:
        raise InvalidInputError(f"TOML cannot hold null (key {nulls[0]!r})", hint="export as JSON instead")
    return tomli_w.dumps(svc.nest(svc.to_file(flat)))


def _holds_null(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_null(v) for v in value)
    return value is None


@app.command("export")
def export(
    ctx: typer.Context,
    file: str = typer.Argument(None, help="Write here (.json or .toml); stdout when omitted."),
    fmt: str = typer.Option(None, "--format", help="json or toml (default: from the file name, else json)."),
    prefix: str = typer.Option(None, "--prefix", help="Only this key and the keys below it."),
    store: str = STORE_OPTION,
) -> None:
    """Active values as a flat JSON object of dotted keys, or as TOML tables (where an object value is written
    as {"$value": …}, so that import reads it back as one value)."""
    s = state(ctx, store=store)
    out = renderer(s)
    flat = s.memory().settings.export(prefix)
    text = _to_toml(flat) if _format_of(file, fmt) == "toml" else dumps(svc.to_json_file(flat)) + "\n"
    if file in (None, "-"):
        out.raw(text)
    else:
        from ltm_cli.parsing import atomic_output

        with atomic_output(file) as handle:
            handle.write(text.encode("utf-8"))
        out.success(f"exported {len(flat)} setting(s) to {file}")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: str = typer.Argument(
        ..., help="JSON (dotted keys, each with its value) or TOML (tables become dotted keys; a "
                  "{\"$value\": …} table is one value); - reads stdin."),
    fmt: str = typer.Option(None, "--format", help="json or toml (default: from the file name, else json)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
    note: str = NOTE_OPTION,
    by: str = BY_OPTION,
    store: str = STORE_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Import settings in one transaction: all of them, or none when any is invalid."""
    s = state(ctx, json=json_out, store=store)
    out = renderer(s)
    text = read_text(file, s.config().max_input_size)
    values = _parse_settings_file(text, _format_of(file, fmt), file)
    result = s.memory().settings.import_(values, dry_run=dry_run, note=note, by=by)
    if out.machine:
        out.data(result)
        return
    for change in result.diff:
        sign = "+" if change["change"] == "added" else "~"
        old = "" if change["old"] is None else f"{_short(change['old'])} -> "
        out.message(f"{sign} {change['key']}: {old}{_short(change['new'])}")
    verb = "would import" if dry_run else "imported"
    out.success(f"{verb}: {len(result.added)} added, {len(result.changed)} changed, "
                f"{len(result.unchanged)} unchanged")


def _parse_settings_file(text: str, fmt: str, name: str) -> dict[str, Any]:
    if fmt == "toml":
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"{name}: invalid TOML: {exc}") from exc
        return svc.from_file(data)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{name}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if isinstance(data, dict) and set(data) == {"settings"} and isinstance(data["settings"], dict):
        data = data["settings"]
    if not isinstance(data, dict):
        raise InvalidInputError(f"{name}: expected a JSON object of dotted keys to values")
    return svc.from_json_file(data)
