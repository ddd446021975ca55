"""``blackboard mcp``: Blackboard's reads, commands and run rollbacks as MCP tools for LLM agents.

Argument parsing only: the tools and the server are ``blackboard.integrations.mcp`` (the ``mcp`` extra).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

import cyclopts

from blackboard.cli.base import ServerUrl, app, console, server_url

ApiKey = Annotated[str | None, cyclopts.Parameter(env_var="BLACKBOARD_API_KEY")]


@app.command(name="mcp")
def mcp_server(
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    url: ServerUrl = None,
    api_key: ApiKey = None,
    tools: str | None = None,
    run_id: str | None = None,
    model: str | None = None,
    prompt_hash: str | None = None,
) -> None:
    """Serve MCP tools acting on a running Blackboard (``--url``, default from BLACKBOARD_HOST/PORT).

    Parameters
    ----------
    transport
        ``stdio`` (an MCP client launches this command) or ``http`` (streamable HTTP at ``http://host:port/mcp``).
    host
        With ``http``: the address to listen on; keep loopback. A client's own key (``Authorization: Bearer``)
        goes on to Blackboard; a client without one acts with ``--api-key``.
    port
        With ``http``: the port to listen on.
    url
        The Blackboard server's base URL.
    api_key
        The API key the tools act with (its mode decides what they may do).
    tools
        Only the tools matching one of these comma-separated shell patterns (``get_*,project_*,rollback_run``).
    run_id
        The agent run id stamped on every command (unless a call names its own), for ``blackboard runs``.
    model
        The model name stamped with it.
    prompt_hash
        The prompt hash stamped with it.
    """
    try:
        from blackboard.integrations.mcp.backend import Backend
        from blackboard.integrations.mcp.server import all_tools, build_server, select, serve_http, serve_stdio
    except ImportError:
        console.print("[red]the MCP server needs the mcp extra: pip install 'blackboard-server[mcp]'[/red]")
        raise SystemExit(2) from None
    agent = {k: v for k, v in {"run_id": run_id, "model": model, "prompt_hash": prompt_hash}.items() if v}
    chosen = select(all_tools(), tools.split(",") if tools else None)
    if not chosen:
        console.print(f"[red]no tool matches {tools}[/red]")
        raise SystemExit(2)

    async def serve() -> None:
        backend = Backend(server_url(url), api_key=api_key, agent=agent)
        server = build_server(backend, chosen)
        try:
            if transport == "http":
                console.print(f"MCP (streamable HTTP) at http://{host}:{port}/mcp → {backend.http.base_url}")
                await serve_http(server, host, port)
            else:
                await serve_stdio(server)
        finally:
            await backend.aclose()

    asyncio.run(serve())
