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


async def test_redis_killed_and_restarted_under_a_read_load(
    pg_url: str, topic_prefix: str, own_redis: RedisServer
) -> None:
    """Readers never see an error while Redis dies and comes back, and once it is back no read is
    older than what PostgreSQL held when the read began."""
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=own_redis.url)
    async with running(settings) as (client, runtime):
        for n in range(5):
            created = await command(client, "project.create", f"project:p-{n}",
                                    {"title": "t", "currency": "EUR", "budget_total": "1000"})
            seen = await client.get(f"/v1/projects/p-{n}", params={"consistent_with": created.json()["position"]})
            assert seen.status_code == 200
        assert runtime.pool is not None
        pool = runtime.pool
        phase = {"back": False}
        stale: list[tuple[str, int, int]] = []
        statuses: list[int] = []

        async def reader(n: int) -> None:
            while not phase.get("done"):
                ident = f"p-{n % 5}"
                floor = await pool.fetchval("SELECT version FROM projects WHERE id = $1", ident)
                response = await client.get(f"/v1/projects/{ident}")
                statuses.append(response.status_code)
                if phase["back"] and response.status_code == 200 and response.json()["version"] < floor:
                    stale.append((ident, response.json()["version"], floor))
                await asyncio.sleep(0.005)

        async def writer() -> None:
            n = 0
            while not phase.get("done"):
                await command(client, "project.add_cost", f"project:p-{n % 5}", {"amount": "0.01", "reason": "r"})
                n += 1
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(reader(n)) for n in range(8)] + [asyncio.create_task(writer())]
        await asyncio.sleep(0.5)
        own_redis.stop()
        await asyncio.sleep(1.0)
        own_redis.start()
        await asyncio.sleep(0.5)
        phase["back"] = True
        await asyncio.sleep(1.5)
        phase["done"] = True
        await asyncio.gather(*tasks)
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
        assert not stale, stale[:5]
        assert (await client.get("/health/ready")).json()["status"] == "ready"


async def test_the_hot_set_is_warmed_at_start(pg_url: str, topic_prefix: str, own_redis: RedisServer) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=own_redis.url)
    async with running(settings) as (client, runtime):
        last = None
        for n in range(3):
            last = await command(client, "project.create", f"project:p-{n}",
                                 {"title": "t", "currency": "EUR", "budget_total": "1"})
        assert last is not None
        await client.get("/v1/projects/p-2", params={"consistent_with": last.json()["position"]})
        assert runtime.redis is not None
        await runtime.redis.flushdb()
    async with running(settings) as (client, runtime):
        assert runtime.cache is not None
        for n in range(3):
            cached = await runtime.cache.get("project", f"p-{n}")
            assert cached is not None and cached.version == 1
