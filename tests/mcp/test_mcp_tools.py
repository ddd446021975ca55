"""The MCP tools against a real server, driven by the MCP client of the same package: in process, over
stdio (``blackboard mcp``) and over streamable HTTP (``blackboard mcp --transport http``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import httpx2
import msgspec
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from blackboard.integrations.mcp.backend import Backend
from blackboard.integrations.mcp.reads import READS
from blackboard.integrations.mcp.server import all_tools, build_server, select
from blackboard.integrations.mcp.tools import object_schema, tool_name
from blackboard.schemas.registry import COMMAND_TYPES
from blackboard.schemas.views import DocumentView, ShotView
from tests.mcp.conftest import CLIENT_KEY, KEY

PROJECT = {"title": "Film", "currency": "EUR", "budget_total": "100.00"}


@contextlib.asynccontextmanager
async def connected(url: str, **agent: str) -> AsyncIterator[Client]:
    """An MCP client of the tools in this process, acting on the server at ``url``: over JSON-RPC with the
    ``initialize`` handshake, as the clients of today's protocol versions connect (the stdio and HTTP test
    speaks the newest)."""
    backend = Backend(url, api_key=KEY, agent=agent)
    try:
        async with Client(build_server(backend), mode="legacy") as client:
            yield client
    finally:
        await backend.aclose()


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, Any]:
    """``(is_error, structured content)`` of one tool call."""
    result = await client.call_tool(tool, arguments)
    assert result.content and result.content[0].type == "text"
    return result.is_error, result.structured_content


def _id() -> str:
    return uuid.uuid4().hex[:10]


async def test_every_tool_is_listed_with_the_structs_schemas(blackboard_url: str) -> None:
    async with connected(blackboard_url) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == {t.name for t in all_tools()}
    assert {tool_name(name) for name in COMMAND_TYPES} | {r.name for r in READS} | {"rollback_run"} == set(listed)
    for name, (category, payload_type) in COMMAND_TYPES.items():
        schema = listed[tool_name(name)].input_schema
        (ref,), defs = object_schema([payload_type])
        assert schema["properties"]["payload"] == ref, name
        assert {k: schema["$defs"][k] for k in defs} == defs, name
        assert schema["required"] == ["stream", "payload"] and schema["additionalProperties"] is False
        assert schema["properties"]["dry_run"]["type"] == "boolean"
        assert schema["properties"]["stream"]["pattern"].startswith(f"^{category}:")
    rollback = listed["rollback_run"]
    assert rollback.input_schema["required"] == ["run_id"]
    assert rollback.input_schema["properties"]["dry_run"]["default"] is True
    assert rollback.annotations is not None and rollback.annotations.destructive_hint is True
    assert listed["get_run"].annotations is not None and listed["get_run"].annotations.read_only_hint is True


async def test_a_dry_run_appends_nothing_and_a_command_is_read_back(blackboard_url: str) -> None:
    p = _id()
    async with connected(blackboard_url) as client:
        error, dry = await call(client, "project_create", stream=f"project:{p}", payload=PROJECT, dry_run=True)
        assert not error and dry["outcome"] == "dry_run" and dry["would"] == "accepted"
        assert [e["type"] for e in dry["events"]] == ["project.created"]
        error, missing = await call(client, "get_project", project_id=p)
        assert error and missing["code"] == "project_not_found" and missing["status"] == 404

        error, accepted = await call(client, "project_create", stream=f"project:{p}", payload=PROJECT)
        assert not error and accepted["outcome"] == "accepted" and accepted["version"] == 1
        assert set(accepted) >= {"command_id", "stream", "version", "position", "events"}
        await call(client, "project_create_shot", stream=f"project:{p}",
                   payload={"shot_id": "s-1", "fields": {"status": "todo", "lens": "50mm"}})
        # No consistency token passed by hand: the tools' reads wait for their own commands.
        _, budget = await call(client, "get_budget", project_id=p)
        assert budget["total"] == "100.00" and budget["spent"] == "0"
        _, shot = await call(client, "get_shot", project_id=p, shot_id="s-1")
        assert msgspec.convert(shot, ShotView) == ShotView(id="s-1", version=1) and shot["lens"] == "50mm"
        _, history = await call(client, "get_history", stream=f"project:{p}")
        assert [e["type"] for e in history["items"]] == ["project.created", "project.shot_created"]
        _, page = await call(client, "list_shots", project_id=p, page_size=1)
        assert [s["id"] for s in page["items"]] == ["s-1"]
        _, then = await call(client, "get_state", stream=f"project:{p}", version=1)
        assert then["version"] == 1 and then["state"]["shots"] == {}


async def test_a_rejection_is_a_tool_error_with_the_rules_code(blackboard_url: str) -> None:
    p = _id()
    async with connected(blackboard_url) as client:
        await call(client, "project_create", stream=f"project:{p}", payload=PROJECT)
        too_much = {"amount": "150", "reason": "render"}
        # A dry run that would be rejected did what it was asked: an answer, not an error.
        error, dry = await call(client, "project_add_cost", stream=f"project:{p}", payload=too_much, dry_run=True)
        assert not error and dry["would"] == "rejected" and dry["code"] == "budget_exceeded"
        result = await client.call_tool("project_add_cost", {"stream": f"project:{p}",
                                                             "payload": {"amount": "150", "reason": "render"}})
        assert result.is_error
        rejected = result.structured_content
        assert rejected["outcome"] == "rejected" and rejected["code"] == "budget_exceeded"
        assert rejected["details"] and rejected["command_id"] and rejected["status"] == 409
        assert result.content[0].type == "text" and result.content[0].text.startswith("budget_exceeded: ")
        # A wrong payload is refused by the server's validation, each bad field named by its path.
        error, invalid = await call(client, "project_add_cost", stream=f"project:{p}", payload={"amount": "-1"})
        assert error and invalid["code"] == "invalid_command" and invalid["status"] == 422
        assert {e["path"] for e in invalid["errors"]} >= {"$.payload.amount"}
        # Arguments a read tool does not take are refused before any request.
        error, bad = await call(client, "get_budget", project_id=p, shot="x")
        assert error and bad["code"] == "invalid_arguments" and "shot" in bad["message"]
        _, budget = await call(client, "get_budget", project_id=p)
        assert budget["spent"] == "0"


async def test_a_run_is_read_and_its_rollback_planned(blackboard_url: str) -> None:
    p, run = _id(), f"run-{_id()}"
    async with connected(blackboard_url, run_id=run, model="m-1") as client:
        await call(client, "project_create", stream=f"project:{p}", payload=PROJECT,
                   agent={"run_id": f"setup-{run}"})
        await call(client, "project_add_cost", stream=f"project:{p}", payload={"amount": "12.50", "reason": "gpu"})
        await call(client, "doc_create", stream=f"doc:notes.{p}", payload={"body": {"text": "x"}})
        _, runs = await call(client, "list_runs", model="m-1")
        assert run in [r["id"] for r in runs["items"]]
        _, shown = await call(client, "get_run", run_id=run)
        assert shown["events"] == 2 and shown["money"][0]["spent"] == "12.50"
        _, changes = await call(client, "get_run_changes", run_id=run)
        assert [e["type"] for e in changes["items"]] == ["project.cost_added", "doc.created"]
        error, effects = await call(client, "get_run_effects", run_id=run)
        assert not error and "items" in effects
        _, plan = await call(client, "rollback_run", run_id=run)
        assert "project.refund_cost" in [c["type"] for c in plan["commands"]]
        _, budget = await call(client, "get_budget", project_id=p)
        assert budget["spent"] == "12.50", "a dry run of the rollback sends nothing"
        _, document = await call(client, "get_document", collection="notes", doc_id=p)
        assert set(document) == set(DocumentView.__struct_fields__)


def test_tools_are_chosen_by_pattern() -> None:
    tools = all_tools()
    assert {t.name for t in select(tools, ["get_run*", "rollback_run"])} == {
        "get_run", "get_run_changes", "get_run_effects", "rollback_run"}
    assert len(select(tools, None)) == len(tools) == len(COMMAND_TYPES) + len(READS) + 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "blackboard.cli", "mcp", "--url", url, *extra]


@contextlib.asynccontextmanager
async def mcp_http(blackboard_url: str) -> AsyncIterator[str]:
    """``blackboard mcp --transport http`` in a process of its own, started: its MCP endpoint."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        *_command(blackboard_url, "--transport", "http", "--port", str(port), "--run-id", "run-http"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        async with httpx.AsyncClient() as probe:
            for _ in range(1200):
                with contextlib.suppress(httpx.TransportError):
                    await probe.get(f"http://127.0.0.1:{port}/mcp")
                    break
                assert proc.returncode is None, await proc.stderr.read()
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        await proc.stderr.read()
        await proc.wait()


async def _over_stdio(blackboard_url: str) -> None:
    p = _id()
    command, *args = _command(blackboard_url, "--tools", "get_*,project_*")
    params = StdioServerParameters(command=command, args=args, env={**os.environ, "BLACKBOARD_API_KEY": KEY})
    async with Client(params) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "get_budget" in names and "project_create" in names and "task_create" not in names
        error, accepted = await call(client, "project_create", stream=f"project:{p}", payload=PROJECT)
        assert not error and accepted["version"] == 1
        _, budget = await call(client, "get_budget", project_id=p)
        assert budget["total"] == "100.00"


async def _over_http(endpoint: str) -> None:
    """The HTTP transport started without a key of its own: each client acts with the key it presents."""
    p = _id()
    # The MCP client's own HTTP client (httpx2, the package's), carrying the key.
    keyed = httpx2.AsyncClient(headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=httpx2.Timeout(30, read=300))
    async with keyed, Client(streamable_http_client(endpoint, http_client=keyed)) as client:
        error, dry = await call(client, "project_create", stream=f"project:{p}", payload=PROJECT, dry_run=True)
        assert not error and dry["would"] == "accepted"
        error, accepted = await call(client, "project_create", stream=f"project:{p}", payload=PROJECT)
        assert not error and accepted["version"] == 1
        _, project = await call(client, "get_project", project_id=p)
        assert project["title"] == "Film"
        _, run = await call(client, "get_run", run_id="run-http")
        assert run["events"] >= 1, "--run-id is stamped on the commands"
        assert run["principals"] == ["agent-7"], "the command went with the client's key"
    async with Client(endpoint) as anonymous:
        error, refused = await call(anonymous, "project_create", stream=f"project:{_id()}", payload=PROJECT)
        assert error and refused["status"] == 401 and refused["code"] == "missing_credentials"


async def test_blackboard_mcp_over_stdio_and_streamable_http(blackboard_url: str) -> None:
    """``blackboard mcp`` as an MCP client runs it (stdio) and as a service (HTTP); both start at once."""
    http = mcp_http(blackboard_url)
    endpoint, _ = await asyncio.gather(http.__aenter__(), _over_stdio(blackboard_url))
    try:
        await _over_http(endpoint)
    finally:
        await http.__aexit__(None, None, None)
