"""Push of changes as Server-Sent Events over a real HTTP server: in order, complete, resumable.

SSE needs a server that streams (httpx's ASGI transport buffers a response until it ends), so
these tests serve the app with uvicorn on a free local port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar

from blackboard.app import Runtime
from blackboard.config import Settings
from blackboard.http_app import build_app
from blackboard.query_api import push
from blackboard.query_api.push import STATE_KEY, Subscriptions
from tests.integration.harness import command, settings_for

CHANGES = "/v1/projects/p-1/changes"
Event = tuple[int, dict[str, Any]]


@pytest.fixture
def settings(pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> Settings:
    """The PostgreSQL log: push reads only the read models, whatever the engine."""
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                        redis_prefix=redis_prefix)


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Litestar]]:
    """A started runtime behind uvicorn on a free port, and a client of it."""
    assert settings.postgres_url is not None
    runtime = Runtime(settings, settings.postgres_url.get_secret_value())
    await runtime.start()
    app = build_app(runtime, manage_lifecycle=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, app
    finally:
        server.should_exit = True
        await task
        sock.close()
        await runtime.stop()


async def listen(client: httpx.AsyncClient, path: str, *, until: int | None = None, count: int | None = None,
                 headers: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> list[Event]:
    """The events of an SSE stream, read until version ``until`` or ``count`` events, then disconnect."""
    events: list[Event] = []
    ident, data = 0, []
    async with client.stream("GET", path, headers=headers, params=params) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                ident = int(line[4:])
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                events.append((ident, json.loads("\n".join(data))))
                data = []
                if (until is not None and ident >= until) or (count is not None and len(events) >= count):
                    return events
    raise AssertionError(f"the stream ended after {len(events)} events")


async def produce(client: httpx.AsyncClient, n: int) -> None:
    """``n`` costs and ``n`` new shots on project p-1, from two concurrent producers."""

    async def costs() -> None:
        for i in range(n):
            answer = await command(client, "project.add_cost", "project:p-1", {"amount": "1.00", "reason": f"r{i}"})
            assert answer.status_code == 200, answer.text

    async def shots() -> None:
        for i in range(n):
            answer = await command(client, "project.create_shot", "project:p-1",
                                   {"shot_id": f"s-{i}", "fields": {"status": "draft"}})
            assert answer.status_code == 200, answer.text

    await asyncio.gather(costs(), shots())


async def create(client: httpx.AsyncClient) -> None:
    answer = await command(client, "project.create", "project:p-1",
                           {"title": "Trailer", "currency": "EUR", "budget_total": "1000.00"})
    assert answer.status_code == 200, answer.text


async def history(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    page = await client.get("/v1/streams/project:p-1/history", params={"page_size": 500})
    items: list[dict[str, Any]] = page.json()["items"]
    return items


async def test_a_subscriber_sees_every_change_in_order_while_commands_arrive(settings: Settings) -> None:
    async with serving(settings) as (client, _):
        final = 1 + 2 * 15
        subscriber = asyncio.create_task(listen(client, CHANGES, until=final))
        await asyncio.sleep(0.2)  # subscribed before the project exists: it waits for it
        await create(client)
        await produce(client, 15)

        events = await asyncio.wait_for(subscriber, 30)

        assert [ident for ident, _ in events] == list(range(1, final + 1))
        assert [entry["version"] for _, entry in events] == list(range(1, final + 1))
        assert [entry for _, entry in events] == await history(client)  # changes and positions included
        assert all(entry["changes"] for _, entry in events)


async def test_a_reconnect_with_last_event_id_misses_none_and_repeats_none(settings: Settings) -> None:
    async with serving(settings) as (client, _):
        await create(client)
        producer = asyncio.create_task(produce(client, 12))
        first = await listen(client, CHANGES, count=5)
        await asyncio.sleep(0.3)  # changes go on while the client is away
        last = first[-1][0]
        rest = await listen(client, CHANGES, until=25, headers={"Last-Event-ID": str(last)},
                            params={"after": 0})  # the header wins over the URL an EventSource keeps
        await producer

        assert [ident for ident, _ in first + rest] == list(range(1, 26))
        by_after = await listen(client, "/v1/streams/project:p-1/changes", until=25, params={"after": 20})
        assert [ident for ident, _ in by_after] == [21, 22, 23, 24, 25]
        assert [entry for _, entry in first + rest] == await history(client)


async def test_idle_streams_get_keep_alives(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(push, "KEEPALIVE_SECONDS", 0.2)
    async with serving(settings) as (client, _):
        async with client.stream("GET", CHANGES) as response:
            lines = response.aiter_lines()
            assert await asyncio.wait_for(anext(lines), 5) == ": keep-alive"


async def test_subscriptions_past_the_limit_get_503_and_bad_positions_422(settings: Settings) -> None:
    async with serving(settings) as (client, app):
        limit = app.state[STATE_KEY] = Subscriptions(1)
        await create(client)
        async with client.stream("GET", CHANGES) as held:
            assert held.status_code == 200
            refused = await client.get(CHANGES)
            assert refused.status_code == 503 and refused.json()["code"] == "too_many_subscribers"
        for _ in range(100):  # the server notices the disconnect and frees the slot
            if limit.open == 0:
                break
            await asyncio.sleep(0.05)
        assert limit.open == 0
        assert [i for i, _ in await listen(client, CHANGES, count=1)] == [1]

        bad = await client.get(CHANGES, headers={"Last-Event-ID": "abc"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_last_event_id"
        negative = await client.get(CHANGES, params={"after": -1})
        assert negative.status_code == 422
