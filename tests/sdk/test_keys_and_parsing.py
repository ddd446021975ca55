"""API keys through the client (and a spool delivered with a refused key keeps everything), the sync
``watch``, and the pure parts: the session token and the event-stream parser."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from blackboard_client import Accepted, ApiError, AsyncClient, Client, Spooled
from blackboard_client._core import Session, SseParser, api_error, entries
from pydantic import SecretStr

from blackboard.config import Settings
from tests.integration.harness import serving
from tests.services import free_port


async def test_keys_are_sent_and_a_refused_key_is_an_api_error(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("w=writer:rw,r=reader:ro")})
    async with serving(keyed) as (_, _, url):
        async with AsyncClient(url) as anonymous, AsyncClient(url, api_key="r") as reader, \
                AsyncClient(url, api_key="w") as writer:
            with pytest.raises(ApiError) as missing:
                await anonymous.send("project.create", "project:k-1", _create())
            assert (missing.value.status, missing.value.code, missing.value.instance) == (
                401, "missing_credentials", "/v1/commands")
            assert missing.value.type == "urn:blackboard:problem:missing_credentials" and missing.value.detail
            with pytest.raises(ApiError) as read_only:
                await reader.send("project.create", "project:k-1", _create())
            assert (read_only.value.status, read_only.value.code) == (403, "insufficient_scope")
            made = await writer.send("project.create", "project:k-1", _create())
            assert isinstance(made, Accepted)
            history = [e async for e in reader.history("project:k-1", consistent_with=made.position)]
            assert history[0]["actor"] == "writer"


def _create() -> dict[str, Any]:
    return {"title": "k", "currency": "EUR", "budget_total": "10.00"}


def _spool_then_deliver_with_keys(url: str, path: Path) -> tuple[int, int]:
    with Client(f"http://127.0.0.1:{free_port()}", spool=path, deadline=1, flush_interval=3600) as bb:
        for i in range(3):
            assert isinstance(bb.send("project.create", f"project:ks-{i}", _create()), Spooled)
    with Client(url, spool=path, api_key="nope", flush_interval=3600) as bb:
        with pytest.raises(ApiError) as refused:
            bb.flush()
        assert refused.value.status == 401
        left = len(bb.spooled())
        assert bb.rejected() == []
    with Client(url, spool=path, api_key="w") as bb:
        assert bb.flush()
        return left, len(bb.spooled())


async def test_a_spool_delivered_with_a_refused_key_keeps_every_command(settings: Settings, tmp_path: Path) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("w=writer:rw")})
    async with serving(keyed) as (_, _, url):
        left, after = await asyncio.to_thread(_spool_then_deliver_with_keys, url, tmp_path / "spool.db")
    assert (left, after) == (3, 0)


def _watch_sync(url: str) -> list[int]:
    with Client(url) as bb:
        bb.send("project.create", "project:ws-1", _create())
        bb.send("project.add_cost", "project:ws-1", {"amount": "1.00", "reason": "a"})
        return [e["version"] for e in itertools.islice(bb.watch("project:ws-1", after=1), 1)]


async def test_the_sync_watch_starts_after_the_version_given(served: tuple[Any, Any, str]) -> None:
    assert await asyncio.to_thread(_watch_sync, served[2]) == [2]


def test_the_session_token_keeps_the_highest_offset_per_partition() -> None:
    session = Session()
    assert session.token() is None
    for position in ("3:10", "1:7", "3:4", "0:2,2:9"):
        session.note(position)
    assert session.token() == "0:2,1:7,2:9,3:10"


def test_the_event_stream_parser_skips_comments_and_joins_data_lines() -> None:
    lines = [": keep-alive", "", "id: 4", 'data: {"version":', "data: 4}", "", "id: 5", 'data: {"version": 5}', ""]
    assert list(entries(SseParser(), iter(lines))) == [(4, {"version": 4}), (5, {"version": 5})]


def test_a_problem_document_becomes_an_api_error_and_so_does_an_older_error_body() -> None:
    problem = (b'{"type":"urn:blackboard:problem:invalid_request","title":"Invalid request","status":422,'
               b'"detail":"the body is not valid","code":"invalid_request","message":"the body is not valid",'
               b'"instance":"/v1/task-graphs","errors":[{"path":"$.tasks","message":"too short"}]}')
    error = api_error(422, problem)
    assert (error.status, error.code, error.message, error.detail) == (
        422, "invalid_request", "the body is not valid", "the body is not valid")
    assert (error.type, error.title, error.instance) == (
        "urn:blackboard:problem:invalid_request", "Invalid request", "/v1/task-graphs")
    assert error.errors == [{"path": "$.tasks", "message": "too short"}] and not error.retryable
    older = api_error(503, b'{"code":"log_unavailable","message":"the log did not answer"}')
    assert (older.code, older.message, older.type, older.instance, older.retryable) == (
        "log_unavailable", "the log did not answer", "about:blank", None, True)
    assert api_error(502, b"<html>bad gateway</html>").code == "http_502"
