"""The `ltm` command: global options, command groups, and the one place errors become exit codes."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from ltm_cli import __version__
from ltm_cli.cli.common import AppState
from ltm_cli.errors import ExitCode, LtmError, classify
from ltm_cli.render import Renderer


class LtmGroup(TyperGroup):
    """Maps LtmError (and a few foreign errors) to one line on stderr and a documented exit code."""

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
                raise
            code, message = classify(exc)
            _report(ctx, message, "run with --debug for the traceback" if code == ExitCode.FAILURE else None)
            raise typer.Exit(code) from None
        finally:
            root_state = ctx.find_root().obj
            if isinstance(root_state, AppState):
                root_state.close()


def _is_debug(ctx: Any) -> bool:
    obj = ctx.find_root().obj
    return bool(getattr(obj, "debug", False))


def _report(ctx: Any, message: str, hint: str | None) -> None:
    if _is_debug(ctx):
        import traceback

        traceback.print_exc(file=sys.stderr)
    Renderer().error(message, hint)


app = typer.Typer(
    cls=LtmGroup,
    name="ltm",
    help="Long-term memory for LLMs in PostgreSQL + pgvector: settings, conversations and documents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
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


def _register() -> None:
    from ltm_cli.cli import config_cmd, db, docs, embed, eval_cmd, history, ingest, mcp, notes, search, settings, stores
    from ltm_cli.cli.forget import forget
    from ltm_cli.cli.transfer import export, import_

    app.add_typer(db.app, name="db")
    app.add_typer(db.migrate_app, name="migrate")
    app.command("ingest")(ingest.ingest)
    app.command("search")(search.search)
    app.command("recall")(search.recall)
    app.command("eval")(eval_cmd.eval_)
    app.add_typer(history.app, name="history")
    app.add_typer(docs.app, name="docs")
    app.add_typer(notes.app, name="note")
    app.add_typer(settings.app, name="settings")
    app.add_typer(stores.app, name="store")
    app.add_typer(embed.app, name="embed")
    app.add_typer(config_cmd.app, name="config")
    app.command("export")(export)
    app.command("import")(import_)
    app.command("forget")(forget)
    app.command("mcp")(mcp.mcp)
    app.add_typer(mcp.tools_app, name="tools")


_register()


def main() -> None:
    """Console-script entry point."""
    app()
