"""The `ltm` command: global options, command groups, and the one place errors become exit codes."""

from __future__ import annotations

import re
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from ltm_cli import __version__
from ltm_cli.cli.common import AppState
from ltm_cli.cli.lazy import COMMANDS, load_command, plain_coercion
from ltm_cli.errors import ExitCode, LtmError, classify
from ltm_cli.render import Renderer


class LtmGroup(TyperGroup):
    """Maps LtmError (and a few foreign errors) to one line on stderr and a documented exit code; imports a
    command group only when it is invoked (lazy.COMMANDS)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_coercion(self)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            command = load_command(cmd_name, _new_app)
            self.add_command(command, cmd_name)
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in COMMANDS and args[0] not in self.commands:
            for name in COMMANDS:  # an unknown name: typer suggests the closest of the commands it holds
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            _usage_error(exc)
            raise

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LtmError as exc:
            _report(ctx, exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            Renderer().error("interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as exc:
            # Click's own flow (usage errors, --help, Exit, Abort): Typer vendors Click, so match by module.
            if type(exc).__module__.startswith(("click", "typer")) or _is_debug(ctx):
                _usage_error(exc)
                raise
            code, message = classify(exc)
            _report(ctx, message, "run with --debug for the traceback" if code == ExitCode.FAILURE else None)
            raise typer.Exit(code) from None
        finally:
            root_state = ctx.find_root().obj
            if isinstance(root_state, AppState):
                root_state.close()


_NEGATIVE = re.compile(r"-\d")


def _usage_error(exc: Exception) -> None:
    """A usage error (unknown option, missing argument, bad value) as one line and a hint, exit 2, instead of
    Click's boxed usage text. A value that starts with '-' (`settings set audio.gain -3`) reads as an option to
    Click: the hint says to put `--` before it."""
    if not any(cls.__name__ == "UsageError" for cls in type(exc).__mro__):
        return
    command = getattr(getattr(exc, "ctx", None), "command_path", "ltm")
    option = getattr(exc, "option_name", "") or ""
    if _NEGATIVE.match(option):
        hint = f"a value that starts with '-' goes after --: {command} … -- {option}"
    else:
        hint = f"see '{command} --help'"
    Renderer().error(exc.format_message(), hint)
    raise typer.Exit(ExitCode.USAGE) from None


def _is_debug(ctx: Any) -> bool:
    obj = ctx.find_root().obj
    return bool(getattr(obj, "debug", False))


def _report(ctx: Any, message: str, hint: str | None) -> None:
    if _is_debug(ctx):
        import traceback

        traceback.print_exc(file=sys.stderr)
    Renderer().error(message, hint)


def _new_app(**settings: Any) -> typer.Typer:
    """A Typer app with the root's settings: the root itself, and the holders lazy.load_command converts with."""
    return typer.Typer(pretty_exceptions_enable=False, rich_markup_mode="rich", **settings)


app = _new_app(
    cls=LtmGroup,
    name="ltm",
    help="Long-term memory for LLMs in PostgreSQL + pgvector: settings, conversations and documents.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"ltm {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    store: str = typer.Option(None, "--store", "-s", help="Memory store (env LTM_STORE; default: default)."),
    database_url: str = typer.Option(
        None, "--database-url", help="PostgreSQL URL (env LTM_DATABASE_URL; default: the embedded server).",
        show_default=False),
    json_output: bool = typer.Option(False, "--json", help="JSON on stdout, for scripts."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or messages on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = AppState(flags={"store": store, "database_url": database_url}, json=json_output,
                       quiet=quiet, debug=debug)


def main() -> None:
    """Console-script entry point."""
    app()
