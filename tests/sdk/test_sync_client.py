"""``Client`` (synchronous) end to end, a command whose answer was lost applied once, ``Retry-After``
honoured, and ``watch`` across a server restart without loss or repeat."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from blackboard_client import Accepted, ApiError, AsyncClient, Client, Rejected
from blackboard_client.commands import AddCost, CreateProject, CreateTask

from blackboard.app import Runtime
from blackboard.config import Settings
from tests.integration.harness import serving
from tests.sdk.proxy import Proxy

Served = tuple[httpx.AsyncClient, Runtime, str]


def _sync_session(url: str) -> None:
    with Client(url) as bb:
        made = bb.send("project.create", "project:s-1", CreateProject(title="s", currency="EUR", budget_total="5.00"))
        assert isinstance(made, Accepted) and made.version == 1
        for i in range(5):
            bb.send("project.add_cost", "project:s-1", AddCost(amount="1.00", reason=f"r{i}"))
            assert bb.budget("s-1")["spent"] == f"{i + 1}.00"  # read-your-writes with no token handling
        with pytest.raises(Rejected) as refused:
            bb.send("project.add_cost", "project:s-1", AddCost(amount="0.01", reason="over"))
        assert refused.value.code == "budget_exceeded"
        for i in range(3):
            bb.send("task.create", f"task:s-{i}", CreateTask(name="n", priority=i))
        assert [t["id"] for t in bb.tasks(sort="-priority", page_size=1)] == ["s-2", "s-1", "s-0"]
        versions = [e["version"] for e in bb.history("project:s-1", page_size=4)]
        assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 6  # with the budget alerts
        with bb.lease("sync-lease", "me", ttl=3) as lease:
            assert bb.lease_info("sync-lease")["token"] == lease.token
        explicit = bb.project("s-1", consistent_with=made.position)
        assert explicit["budget"]["spent"] == "5.00"


async def test_the_sync_client_sends_reads_its_writes_refuses_and_pages(served: Served) -> None:
    await asyncio.to_thread(_sync_session, served[2])


async def test_a_command_whose_answer_was_lost_is_retried_and_applied_once(served: Served) -> None:
    raw, _, url = served
    proxy = Proxy(int(url.rsplit(":", 1)[1]), drop_answers=2)
    via = await proxy.start()
    try:
        async with AsyncClient(via) as bb:
            await bb.send("project.create", "project:d-1", CreateProject(title="d", currency="EUR",
                                                                         budget_total="100"))
            answer = await bb.send("project.add_cost", "project:d-1", AddCost(amount="1.00", reason="once"),
                                   command_id="lost-answer")
        sync = await asyncio.to_thread(_send_sync, via, proxy)
    finally:
        await proxy.stop()
    assert proxy.dropped == 3 and isinstance(answer, Accepted) and isinstance(sync, Accepted)
    history = (await raw.get("/v1/streams/project:d-1/history", params={"consistent_with": sync.position})).json()
    ids = [e["command_id"] for e in history["items"]]
    assert ids.count("lost-answer") == 1 and ids.count("lost-sync") == 1
    assert (await raw.get("/v1/projects/d-1/budget")).json()["spent"] == "3.00"


def _send_sync(url: str, proxy: Proxy) -> Accepted:
    proxy.drop_answers = 1
    with Client(url) as bb:
        answer = bb.send("project.add_cost", "project:d-1", AddCost(amount="2.00", reason="sync"),
                         command_id="lost-sync")
    assert isinstance(answer, Accepted)
    return answer


def test_retry_after_is_honoured_and_the_command_id_kept() -> None:
    seen: list[tuple[float, bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((time.monotonic(), request.content))
        if len(seen) == 1:
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"code": "rate_limited", "message": "x"})
        if len(seen) == 2:
            return httpx.Response(503, json={"code": "log_unavailable", "message": "x"})
        body = {"outcome": "accepted", "command_id": "c", "stream": "project:x", "version": 1, "events": [],
                "position": "0:1"}
        return httpx.Response(200, json=body)

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://blackboard.test")
    with Client("http://blackboard.test", http=http) as bb:
        bb.send("project.set_status", "project:x", {"status": "active"})
    assert len(seen) == 3 and seen[1][0] - seen[0][0] >= 1.0
    assert seen[0][1] == seen[1][1] == seen[2][1], "every attempt sends the same body and command_id"


async def test_watch_resumes_across_a_server_restart_without_loss_or_repeat(settings: Settings) -> None:
    seen: list[dict[str, Any]] = []
    async with serving(settings) as (_, _, first):
        proxy = Proxy(int(first.rsplit(":", 1)[1]))
        via = await proxy.start()
        bb = AsyncClient(via)

        async def follow() -> None:
            async for entry in bb.watch("project:w-1"):
                seen.append(entry)
                if len(seen) == 6:
                    return

        await bb.send("project.create", "project:w-1", CreateProject(title="w", currency="EUR", budget_total="9"))
        follower = asyncio.create_task(follow())
        for i in range(2):
            await bb.send("project.add_cost", "project:w-1", AddCost(amount="1", reason=f"before-{i}"))
        while len(seen) < 3:
            await asyncio.sleep(0.05)
        proxy.cut()
    async with serving(settings) as (_, _, second):
        proxy.upstream = int(second.rsplit(":", 1)[1])
        for i in range(3):
            await bb.send("project.add_cost", "project:w-1", AddCost(amount="1", reason=f"after-{i}"))
        await asyncio.wait_for(follower, 30)
        await bb.aclose()
        await proxy.stop()
    assert [e["version"] for e in seen] == [1, 2, 3, 4, 5, 6]


def test_a_retry_after_past_the_deadline_gives_up_at_once_with_the_status() -> None:
    calls: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return httpx.Response(429, headers={"Retry-After": "30"}, json={"code": "rate_limited", "message": "slow"})

    http = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://blackboard.test")
    began = time.monotonic()
    with Client("http://blackboard.test", http=http, deadline=5) as bb, pytest.raises(ApiError) as limited:
        bb.project("p")
    assert (limited.value.status, limited.value.code, len(calls)) == (429, "rate_limited", 1)
    assert time.monotonic() - began < 1
