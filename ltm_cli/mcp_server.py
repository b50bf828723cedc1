"""`ltm mcp`: the memory as a Model Context Protocol server (tools, resources, a prompt), over stdio or
streamable HTTP. Built on the official `mcp` SDK's low-level `Server`, so the tools' JSON schemas are the ones in
ltm_cli/tools.py, the same that `ltm tools` prints for other function-calling LLMs."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ltm_cli import __version__
from ltm_cli.errors import InvalidInputError, LtmError, classify
from ltm_cli.tools import Caller, available, call

if TYPE_CHECKING:
    from ltm_cli.memory import Memory

log = logging.getLogger("ltm.mcp")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DOCUMENT_URI = "ltm://documents/{id}"
INSTRUCTIONS = """\
ltm is your long-term memory, kept in PostgreSQL between conversations.
- Settings you were asked to change (voice, persona, prompts…): settings_get / settings_set / settings_history /
  settings_revert. Record the user's reason in `note`.
- Reference documents (manuals, product docs, API specifications): memory_search for passages with citations,
  memory_recall for one prompt-ready block. Look an API's operation up before you call it.
- Conversations: log_turn each turn (with the tool you called, its result and outcome), record_outcome once you
  know how an action turned out, history_search (outcome=failure) to learn from what went wrong before.
- Facts and lessons worth keeping (a user preference, what an API rejects): remember them with a subject
  (`about`); supersede_note when one changes, forget_note when it is wrong. memory_recall shows live notes first.
"""


@dataclass
class ServerOptions:
    read_only: bool = False
    allowed_paths: tuple[Path, ...] = ()
    token: str | None = None
    allowed_origins: tuple[str, ...] = ()
    name: str = "ltm"
    calls: dict[str, int] = field(default_factory=dict)


def allowed_roots(paths: list[str] | None) -> tuple[Path, ...]:
    """--allow-path directories, resolved once at start: each must exist and be a directory."""
    roots = []
    for raw in paths or []:
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise InvalidInputError(f"--allow-path {raw}: not a directory")
        roots.append(path)
    return tuple(roots)


class LtmMcp:
    """The server's behaviour, independent of the transport: one `Memory` shared by every request (its pool
    and its embedder stay warm), each call run in a worker thread because the database driver blocks."""

    def __init__(self, memory: Memory, options: ServerOptions) -> None:
        self.memory = memory
        self.options = options
        self.tools = available(read_only=options.read_only, allow_paths=bool(options.allowed_paths))
        self._lock = threading.Lock()

    # -- tools ---------------------------------------------------------------------------------------------
    def call_tool(self, name: str, arguments: dict[str, Any] | None, client: str | None) -> tuple[bool, dict, str]:
        """(is_error, structured content, text). Never raises: bad input is a tool error the model can read."""
        with self._lock:
            self.options.calls[name] = self.options.calls.get(name, 0) + 1
        caller = Caller(name=client or "mcp-client", allowed_paths=self.options.allowed_paths)
        try:
            result = call(self.memory, name, arguments or {}, caller, read_only=self.options.read_only)
        except Exception as exc:  # the server never dies on bad input: every error is the tool's answer
            code, message = classify(exc)
            if not isinstance(exc, LtmError):
                log.exception("tool %s failed", name)
            hint = getattr(exc, "hint", None)
            return True, {"error": message, "exit_code": code, **({"hint": hint} if hint else {})}, \
                message + (f" (hint: {hint})" if hint else "")
        return False, result.data, result.text

    # -- resources and the prompt -------------------------------------------------------------------------
    def settings_json(self) -> str:
        return json.dumps(self.memory.settings.export(), ensure_ascii=False, indent=1)

    def document_text(self, ref: str) -> str:
        from ltm_cli.services.recall import merge_overlapping

        detail = self.memory.docs.show(ref)
        doc = detail.document
        text = ""
        for chunk in detail.chunks:
            text = merge_overlapping(text, chunk.text) if text else chunk.text
        return f"# {doc.title or Path(doc.source).name}\n\nSource: `{doc.source}`\n\n{text}\n"

    def with_memory(self, question: str) -> str:
        settings = self.memory.settings.export()
        recalled = self.memory.recall(question).markdown
        active = json.dumps(settings, ensure_ascii=False, indent=1) if settings else "(none)"
        return (f"Your active settings (follow them):\n```json\n{active}\n```\n\n{recalled}\n"
                f"Answer using the memory above where it applies, citing passages by their [number].\n\n"
                f"Question: {question}")


def build_server(app: LtmMcp) -> Any:
    """The SDK's low-level Server with ltm's handlers."""
    import anyio
    import mcp.types as types
    from mcp.server import Server
    from mcp.shared.exceptions import MCPError

    def client_name(ctx: Any) -> str | None:
        params = ctx.session.client_params
        if params is not None:
            return params.client_info.name
        info = (ctx.meta or {}).get(types.CLIENT_INFO_META_KEY)
        return info.get("name") if isinstance(info, dict) else None

    tool_list = [types.Tool(name=t.name, title=t.title, description=t.description, input_schema=t.parameters,
                            annotations=types.ToolAnnotations(**{
                                "title": t.title, "read_only_hint": t.read_only, "destructive_hint": t.destructive,
                                "idempotent_hint": t.read_only, "open_world_hint": False}))
                 for t in app.tools]

    async def list_tools(ctx: Any, params: Any) -> Any:
        return types.ListToolsResult(tools=tool_list)

    async def call_tool(ctx: Any, params: Any) -> Any:
        name, client = params.name, client_name(ctx)
        is_error, data, text = await anyio.to_thread.run_sync(app.call_tool, name, params.arguments, client)
        return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=data,
                                    is_error=is_error)

    async def list_resources(ctx: Any, params: Any) -> Any:
        return types.ListResourcesResult(resources=[types.Resource(
            uri="ltm://settings", name="settings", title="Active settings", mime_type="application/json",
            description="Every active setting of this store as one JSON object of dotted keys.")])

    async def list_templates(ctx: Any, params: Any) -> Any:
        return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
            uri_template=DOCUMENT_URI, name="document", title="A stored document", mime_type="text/markdown",
            description="The text of a stored document by its id (docs_list gives the ids).")])

    async def read_resource(ctx: Any, params: Any) -> Any:
        uri = str(params.uri)
        try:
            if uri == "ltm://settings":
                text, mime = await anyio.to_thread.run_sync(app.settings_json), "application/json"
            elif uri.startswith("ltm://documents/") and uri.rsplit("/", 1)[1].isdigit():
                text = await anyio.to_thread.run_sync(app.document_text, uri.rsplit("/", 1)[1])
                mime = "text/markdown"
            else:
                raise MCPError(code=types.INVALID_PARAMS, message=f"no resource {uri}")
        except LtmError as exc:
            raise MCPError(code=types.INVALID_PARAMS, message=exc.message) from None
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, text=text, mime_type=mime)])

    async def list_prompts(ctx: Any, params: Any) -> Any:
        return types.ListPromptsResult(prompts=[types.Prompt(
            name="with-memory", title="Answer with memory",
            description="The active settings and the memory recalled for a question, ready to answer from.",
            arguments=[types.PromptArgument(name="question", description="The user's question", required=True)])])

    async def get_prompt(ctx: Any, params: Any) -> Any:
        if params.name != "with-memory":
            raise MCPError(code=types.INVALID_PARAMS, message=f"no prompt {params.name!r}")
        question = (params.arguments or {}).get("question", "").strip()
        if not question:
            raise MCPError(code=types.INVALID_PARAMS, message="with-memory needs a question")
        try:
            text = await anyio.to_thread.run_sync(app.with_memory, question)
        except LtmError as exc:
            raise MCPError(code=types.INTERNAL_ERROR, message=exc.message) from None
        return types.GetPromptResult(description="Settings and recalled memory", messages=[
            types.PromptMessage(role="user", content=types.TextContent(text=text))])

    return Server(app.options.name, version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool, on_list_resources=list_resources,
                  on_list_resource_templates=list_templates, on_read_resource=read_resource,
                  on_list_prompts=list_prompts, on_get_prompt=get_prompt)


def serve_stdio(app: LtmMcp) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    server = build_server(app)

    async def main() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(main)


def parse_bind(value: str) -> tuple[str, int]:
    """[HOST:]PORT, HOST defaulting to 127.0.0.1 ([::1]:PORT for IPv6)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"--http {value}: expected [HOST:]PORT with a port from 1 to 65535")
    return host or "127.0.0.1", int(port)


class BearerToken:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>` (lifespan passes)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                from starlette.responses import JSONResponse

                response = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def require_token(host: str, token: str | None) -> None:
    """Binding anything but loopback requires a token: the memory holds private conversations."""
    if host not in LOOPBACK and not token:
        raise InvalidInputError(f"refusing to serve on {host} without a token",
                                hint="set LTM_MCP_TOKEN to a long random secret; clients send it as a bearer token")


def http_app(app: LtmMcp, host: str, port: int) -> Any:
    """The streamable-HTTP ASGI app: Host and Origin checked (DNS rebinding), the bearer token when set.
    Binding anything but loopback requires a token: the memory holds private conversations."""
    from mcp.server.transport_security import TransportSecuritySettings

    require_token(host, app.options.token)
    hosts = [f"{h}:*" for h in ("127.0.0.1", "localhost", "[::1]")]
    origins = [f"http://{h}:*" for h in ("127.0.0.1", "localhost", "[::1]")]
    if host not in LOOPBACK:
        shown = f"[{host}]" if ":" in host else host
        hosts.append(f"{shown}:*")
        origins += [f"http://{shown}:*", f"https://{shown}:*"]
    origins += list(app.options.allowed_origins)
    security = TransportSecuritySettings(enable_dns_rebinding_protection=host not in ("0.0.0.0", "::"),
                                         allowed_hosts=hosts, allowed_origins=origins)
    asgi = build_server(app).streamable_http_app(streamable_http_path="/mcp", stateless_http=True,
                                                 transport_security=security, host=host)
    if host in ("0.0.0.0", "::"):
        asgi = OriginCheck(asgi, origins)
    return BearerToken(asgi, app.options.token) if app.options.token else asgi


class OriginCheck:
    """On a wildcard bind the Host header can be anything, but a browser's Origin still must be one we allow."""

    def __init__(self, app: Any, allowed: list[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            origin = dict(scope["headers"]).get(b"origin")
            if origin is not None and not any(_origin_matches(origin.decode("latin-1"), a) for a in self.allowed):
                from starlette.responses import JSONResponse

                await JSONResponse({"error": "origin not allowed"}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _origin_matches(origin: str, pattern: str) -> bool:
    if pattern.endswith(":*"):
        base = pattern[:-2]
        return origin == base or origin.startswith(base + ":")
    return origin == pattern


def check_bind(host: str, port: int) -> None:
    """Fail before serving, with one line, when the address cannot be listened on."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidInputError(f"--http {host}:{port}: unknown host ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve_http(app: LtmMcp, host: str, port: int, *, ready: Any = None) -> None:
    import uvicorn

    check_bind(host, port)
    asgi = http_app(app, host, port)
    config = uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    if ready is not None:
        ready(host, port)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits 3 when start-up fails: not ltm's "not found"
        if exc.code not in (0, None):
            raise LtmError(f"the HTTP server stopped: exit {exc.code}") from None
