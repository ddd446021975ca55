"""kill -9 of the whole process with commands in flight: nothing acknowledged is lost or doubled,
and the read models equal a fresh rebuild from the log."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from decimal import Decimal

import httpx
import pytest

from tests.integration.harness import (
    Process,
    assert_dense_versions,
    read_checksums,
    read_events,
    rebuilding,
    wait_rebuilt,
)
from tests.services import free_port

pytestmark = pytest.mark.slow


def _cost(cid: str, project: int) -> dict[str, object]:
    return {"type": "project.add_cost", "stream": f"project:p-{project}", "command_id": cid,
            "payload": {"amount": "0.01", "reason": "load"}}


async def _send_until_killed(url: str, acked: dict[str, str], sent: list[tuple[str, int]],
                             stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            cid, project = f"k-{time.monotonic_ns()}", len(sent) % 3
            sent.append((cid, project))
            body = _cost(cid, project)
            try:
                r = await client.post(f"{url}/v1/commands", json=body)
                if r.status_code == 200:
                    acked[cid] = r.json()["position"]
            except httpx.TransportError:
                return


@pytest.mark.parametrize("engine", ["postgres", "kafka"])
async def test_kill_minus_nine_loses_nothing_acknowledged(
    request: pytest.FixtureRequest, engine: str, pg_url: str, topic_prefix: str
) -> None:
    kafka = request.getfixturevalue("kafka_bootstrap") if engine == "kafka" else None
    env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix,
           "BLACKBOARD_PARTITIONS": "4", **({"BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS": kafka} if kafka else {})}
    port = free_port()
    first = Process(env, port)
    await first.ready()
    async with httpx.AsyncClient() as client:
        for p in range(3):
            body = {"type": "project.create", "stream": f"project:p-{p}",
                    "payload": {"title": "t", "currency": "EUR", "budget_total": "100000"}}
            assert (await client.post(f"{first.url}/v1/commands", json=body)).status_code == 200
    acked: dict[str, str] = {}
    sent: list[tuple[str, int]] = []
    stop = asyncio.Event()
    load = [asyncio.create_task(_send_until_killed(first.url, acked, sent, stop)) for _ in range(8)]
    # Kill mid-load once enough is acknowledged (a busy machine acknowledges more slowly), within 60 s.
    deadline = time.monotonic() + 60
    while len(acked) <= 20 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    first.kill9()
    stop.set()
    await asyncio.gather(*load)
    assert len(acked) > 20, "the load must have been acknowledged before the kill"

    second = Process(env, port)
    await second.ready()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            # Clients retry everything they sent with the same command_id: each converges to one outcome.
            for cid, project in sent:
                r = await client.post(f"{second.url}/v1/commands", json=_cost(cid, project))
                assert r.status_code == 200, r.text
                if cid in acked:
                    assert r.headers.get("idempotent-replayed") == "true"
            token = r.json()["position"]
            await client.get(f"{second.url}/v1/projects/p-0", params={"consistent_with": token})
            await _settled(client, second.url, sent)
    finally:
        second.stop()
    await _assert_log_and_models(engine, pg_url, topic_prefix, sent, kafka)


async def _settled(client: httpx.AsyncClient, url: str, sent: list[tuple[str, int]]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        spent = Decimal(0)
        for p in range(3):
            spent += Decimal((await client.get(f"{url}/v1/projects/p-{p}")).json()["budget"]["spent"])
        if spent == Decimal("0.01") * len(sent):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"read models did not reach {len(sent)} costs")


async def _assert_log_and_models(engine: str, pg_url: str, topic_prefix: str, sent: list[tuple[str, int]],
                                 kafka: str | None) -> None:
    async with rebuilding(engine, pg_url, topic_prefix, kafka) as (settings, runtime):
        assert runtime.log is not None
        events = await read_events(runtime.log, settings.events_topic)
        per_command = Counter(e.envelope.command_id for e in events if e.envelope.type == "project.cost_added")
        assert per_command == Counter({cid: 1 for cid, _ in sent})
        assert_dense_versions(events)
        await wait_rebuilt(runtime.log, settings, pg_url, "rebuild")
    assert await read_checksums(pg_url, settings.read_schema) == await read_checksums(pg_url, "rebuild")
