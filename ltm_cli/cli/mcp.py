"""`ltm mcp` and `ltm tools`: the memory's faces for LLMs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ltm_cli.cli.common import STORE_OPTION, renderer, state
from ltm_cli.errors import InvalidInputError

tools_app = typer.Typer(help="Tool definitions for function-calling LLMs, and running one tool.",
                        invoke_without_command=True)


def mcp(
    ctx: typer.Context,
    http: str = typer.Option(None, "--http", metavar="[HOST:]PORT",
                             help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (HOST defaults "
                                  "to 127.0.0.1; any other address needs LTM_MCP_TOKEN)."),
    read_only: bool = typer.Option(False, "--read-only", help="Offer only the tools that do not write."),
    allow_path: list[Path] = typer.Option(None, "--allow-path", metavar="DIR",
                                          help="Offer docs_ingest for files under DIR (repeatable); without it "
                                               "the LLM cannot make ltm read files."),
    allow_origin: list[str] = typer.Option(None, "--allow-origin", metavar="ORIGIN",
                                           help="Another browser Origin allowed over HTTP, e.g. "
                                                "https://app.example:* (repeatable)."),
    store: str = STORE_OPTION,
) -> None:
    """Serve the memory to LLM clients over the Model Context Protocol (Claude Desktop, Claude Code, Cursor…).

    Tools for settings, search and recall, conversation turns and outcomes, documents; the resources
    ltm://settings and ltm://documents/{id}; the prompt with-memory. With --http, clients send
    `Authorization: Bearer $LTM_MCP_TOKEN` when LTM_MCP_TOKEN is set."""
    import os

    from ltm_cli.mcp_server import (
        LtmMcp,
        ServerOptions,
        allowed_roots,
        parse_bind,
        require_token,
        serve_http,
        serve_stdio,
    )

    s = state(ctx, store=store)
    out = renderer(s)
    bind = parse_bind(http) if http else None
    token = os.environ.get("LTM_MCP_TOKEN") or None
    if token is not None and len(token) < 16:
        raise InvalidInputError("LTM_MCP_TOKEN is too short", hint="use at least 16 random characters")
    if bind:
        require_token(bind[0], token)  # before the banner says where it serves
    options = ServerOptions(read_only=read_only, allowed_paths=allowed_roots([str(p) for p in allow_path or []]),
                            token=token, allowed_origins=tuple(allow_origin or ()))
    memory = s.memory()
    memory.db.ensure_schema()  # start the embedded server and check the schema before the first client call
    app = LtmMcp(memory, options)
    where = f"http://{bind[0]}:{bind[1]}/mcp" if bind else "stdio"
    out.message(f"ltm mcp: store {memory.store_name!r}, {len(app.tools)} tools"
                f"{' (read-only)' if read_only else ''}, on {where}")
    if bind:
        serve_http(app, *bind)
    else:
        serve_stdio(app)


@tools_app.callback()
def tools(
    ctx: typer.Context,
    fmt: str = typer.Option("openai", "--format", "-f", help="openai, anthropic or mcp."),
    read_only: bool = typer.Option(False, "--read-only", help="Only the tools that do not write."),
    with_ingest: bool = typer.Option(False, "--with-ingest", help="Include docs_ingest (offered by `ltm mcp` "
                                                                 "only with --allow-path)."),
) -> None:
    """Print the tool definitions as JSON, for an LLM's function calling (the same tools `ltm mcp` serves)."""
    if ctx.invoked_subcommand is not None:
        return
    from ltm_cli.render import dumps
    from ltm_cli.tools import definitions

    sys.stdout.write(dumps(definitions(fmt, read_only=read_only, allow_paths=with_ingest)) + "\n")


@tools_app.command("call")
def call(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The tool, e.g. settings_set or memory_search."),
    args: str = typer.Option("{}", "--args", "-a", help="Its arguments as a JSON object; - reads stdin."),
    by: str = typer.Option("ltm tools call", "--by", help="Who calls (recorded on settings changes)."),
    allow_path: list[Path] = typer.Option(None, "--allow-path", metavar="DIR",
                                          help="Directories docs_ingest may read (repeatable)."),
    store: str = STORE_OPTION,
) -> None:
    """Run one tool and print its JSON result: for agents that can only shell out.

    Errors are one line on stderr with the documented exit code, as for every command."""
    from ltm_cli.mcp_server import allowed_roots
    from ltm_cli.parsing import read_text
    from ltm_cli.render import dumps
    from ltm_cli.tools import Caller
    from ltm_cli.tools import call as run

    s = state(ctx, store=store)
    text = read_text("-", s.config().max_input_size) if args == "-" else args
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--args is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(arguments, dict):
        raise InvalidInputError("--args must be a JSON object of the tool's arguments")
    caller = Caller(name=by, allowed_paths=allowed_roots([str(p) for p in allow_path or []]))
    result = run(s.memory(), name, arguments, caller)
    sys.stdout.write(dumps(result.data) + "\n")
