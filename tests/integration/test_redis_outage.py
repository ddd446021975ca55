"""Redis stopped mid-test: reads answer from PostgreSQL; once it is back nothing stale is served."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.harness import command, running, settings_for
from tests.services import RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()
    server.forget_snapshot()


async def test_reads_survive_redis_going_away(pg_url: str, topic_prefix: str, own_redis: RedisServer) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=own_redis.url)
    async with running(settings) as (client, runtime):
        created = await command(client, "project.create", "project:p-1",
                                {"title": "t", "currency": "EUR", "budget_total": "50"})
        token = created.json()["position"]
        assert (await client.get("/v1/projects/p-1", params={"consistent_with": token})).status_code == 200
        assert runtime.cache is not None and await runtime.cache.get("project", "p-1") is not None

        own_redis.stop()
        for _ in range(5):
            r = await client.get("/v1/projects/p-1", params={"consistent_with": token})
            assert r.status_code == 200 and r.json()["version"] == 1
        ready = await client.get("/health/ready")
        assert ready.json()["status"] == "degraded" and ready.json()["dependencies"]["redis"] == "down"
        assert ready.json()["dependencies"]["log"] == ready.json()["dependencies"]["postgres"] == "up"
        # Commands go on while the cache is down; PostgreSQL has the truth.
        spent = await command(client, "project.add_cost", "project:p-1", {"amount": "5.00", "reason": "r"})
        assert spent.status_code == 200
        during = await client.get("/v1/projects/p-1", params={"consistent_with": spent.json()["position"]})
        assert during.json()["version"] == 2

        own_redis.start()  # back, empty
        after = await client.get("/v1/projects/p-1")
        assert after.status_code == 200 and after.json()["version"] == 2
        assert (await client.get("/health/ready")).json()["status"] == "ready"


async def test_a_redis_that_comes_back_with_old_data_serves_nothing_stale(
    pg_url: str, topic_prefix: str, own_redis: RedisServer
) -> None:
    """Redis comes back holding an older copy (a failover to a stale replica, a restored snapshot)
    after missing write-throughs: the old document is never served again."""
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=own_redis.url)
    async with running(settings) as (client, runtime):
        created = await command(client, "project.create", "project:p-1",
                                {"title": "t", "currency": "EUR", "budget_total": "50"})
        assert (await client.get("/v1/projects/p-1",
                                 params={"consistent_with": created.json()["position"]})).json()["version"] == 1
        assert runtime.redis is not None and runtime.cache is not None
        assert (await runtime.cache.get("project", "p-1")) is not None
        await runtime.redis.save()  # the copy that will come back: version 1

        own_redis.stop()
        spent = await command(client, "project.add_cost", "project:p-1", {"amount": "5.00", "reason": "r"})
        during = await client.get("/v1/projects/p-1", params={"consistent_with": spent.json()["position"]})
        assert during.status_code == 200 and during.json()["version"] == 2
        own_redis.start()  # loads the snapshot: version 1 is back in Redis

        for _ in range(40):
            read = await client.get("/v1/projects/p-1")
            assert read.status_code == 200 and read.json()["version"] == 2
            await asyncio.sleep(0.1)
        cached = await runtime.cache.get("project", "p-1")
        assert cached is None or cached.version == 2
