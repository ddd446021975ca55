"""The MCP server: the tools over a ``Backend``, served on stdio or streamable HTTP.

A tool's answer is the server's JSON, as structured content and as text. A rejected command, a refused
request (401, 404, 422 with the JSON path of each bad field…) and an unreachable server are tool errors
(``isError``) whose structured content carries the ``code``, the ``message`` and the rule's ``details`` (or
the field ``errors``), so an agent can read why and correct itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import httpx
import mcp_types as types
import msgspec
from mcp.server import Server
from mcp.server.context import ServerRequestContext

from blackboard import __version__
from blackboard.integrations.mcp.backend import CALLER_KEY, Answer, Backend
from blackboard.integrations.mcp.reads import BadArguments, read_tools
from blackboard.integrations.mcp.tools import ToolDef, command_tools
from blackboard.schemas.auth import presented_key

INSTRUCTIONS = """\
Blackboard is an event-sourced state store: every change is a command sent to a stream ('project:p-1',
'task:t-7', 'lease:render', 'doc:reviews.r-1'…), decided against the stream's current state by its rules, and
either accepted (its events appended) or rejected with a code (budget_exceeded, version_conflict, lease_held…).
Command tools are named after the command type (project_create, task_claim…); pass dry_run: true to see what a
command would do (events, changed fields, rules checked) without appending anything. Reads (get_*, list_*)
see this server's own accepted commands. Agent runs (list_runs, get_run, get_run_changes, get_run_effects) show
what a run changed; rollback_run takes it back with compensating commands (dry run by default).
"""


def all_tools() -> list[ToolDef]:
    """Every tool: the reads, the rollback, then one per command type."""
    return [*read_tools(), *command_tools()]


def select(tools: Iterable[ToolDef], patterns: Iterable[str] | None) -> list[ToolDef]:
    """The tools whose name matches one of ``patterns`` (shell-style: ``get_*``, ``project_*``); all without."""
    wanted = [p.strip() for p in patterns or () if p.strip()]
    return [t for t in tools if not wanted or any(fnmatchcase(t.name, p) for p in wanted)]


def _listed(tool: ToolDef) -> types.Tool:
    hints = types.ToolAnnotations(read_only_hint=tool.read_only, destructive_hint=tool.destructive,
                                  idempotent_hint=tool.read_only or None, open_world_hint=False)
    return types.Tool(name=tool.name, description=tool.description, input_schema=tool.input_schema,
                      annotations=hints)


def _result(doc: Any, *, error: bool = False) -> types.CallToolResult:
    text = msgspec.json.encode(doc).decode()
    if error:
        text = f"{doc.get('code')}: {doc.get('message')}\n{text}"
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=doc, is_error=error)


def _error(code: str, message: str, **more: Any) -> types.CallToolResult:
    return _result({"code": code, "message": message, **more}, error=True)


def answer_result(answer: Answer) -> types.CallToolResult:
    """The tool result of the server's answer: 2xx its JSON; else a tool error with the status, code and
    message, and the rule's ``details`` or the fields' ``errors`` when the answer has them."""
    if 200 <= answer.status < 300:
        return _result(answer.body)
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status == 409 and body.get("outcome") == "rejected":
        return _result({"status": 409, **body}, error=True)
    return _error(str(body.get("code", f"http_{answer.status}")), str(body.get("detail", body.get("message", ""))),
                  status=answer.status, **({"errors": body["errors"]} if body.get("errors") else {}))


def caller_key(request: Any) -> str | None:
    """The API key an HTTP request to the MCP endpoint carries (``Authorization: Bearer`` or ``X-API-Key``), read
    as Blackboard reads it; ``None`` over stdio (no request) or without one."""
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    return presented_key(headers.get("authorization"), headers.get("x-api-key"))


def build_server(backend: Backend, tools: list[ToolDef] | None = None) -> Server[Any]:
    """The MCP server of ``tools`` (every tool by default), each acting on ``backend``."""
    chosen = {t.name: t for t in (tools if tools is not None else all_tools())}
    listing = types.ListToolsResult(tools=[_listed(t) for t in chosen.values()])

    async def list_tools(ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        return listing

    async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
                        ) -> types.CallToolResult:
        tool = chosen.get(params.name)
        if tool is None:
            return _error("unknown_tool", f"no tool named {params.name!r}")
        caller = CALLER_KEY.set(caller_key(ctx.request))
        try:
            return answer_result(await tool.run(backend, dict(params.arguments or {})))
        except BadArguments as exc:
            return _error("invalid_arguments", str(exc))
        except httpx.TransportError as exc:
            return _error("unreachable", f"Blackboard at {backend.http.base_url} did not answer: {exc!r}")
        finally:
            CALLER_KEY.reset(caller)

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = chosen.get(name)
        return tool.input_schema if tool is not None else None

    return Server("blackboard", version=__version__, instructions=INSTRUCTIONS, on_list_tools=list_tools,
                  on_call_tool=call_tool, get_tool_input_schema=input_schema)


async def serve_stdio(server: Server[Any]) -> None:
    """Serve one client on this process's stdin and stdout (what an MCP client that launches us speaks)."""
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(server: Server[Any], host: str, port: int) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until interrupted."""
    import uvicorn

    app = server.streamable_http_app(host=host)
    await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()
