"""PostgreSQL, Redis and the broker made unreachable under a command load (a cut link: ``faults.Link``), then
reachable again: nothing acknowledged is lost or doubled, no answer is a 5xx but 503, the service recovers by
itself within 30 s, lag returns to 0 and the read models equal a rebuild of the log.

``BLACKBOARD_FAULT_SECONDS`` sets how long each cut lasts (2 s here; the nightly run sets 20).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

from blackboard.config import Settings
from tests.integration.faults import (
    COMMAND_TIMEOUT,
    FAULT_SECONDS,
    PROJECTS,
    RECOVERY_SECONDS,
    SETTLE,
    Link,
    Outcomes,
    acked_between,
    answered_and_recovered,
    check_invariants,
    cost,
    create_projects,
    loaded,
    report,
    send_until_decided,
    status,
    until,
    upstream_of,
    with_port,
)
from tests.integration.harness import serving, settings_for
from tests.services import Tansu, free_port


@contextlib.asynccontextmanager
async def links(*made: Link) -> AsyncIterator[None]:
    for link in made:
        await link.start()
    try:
        yield
    finally:
        for link in made:
            await link.stop()


async def test_postgres_then_redis_unreachable_under_load(pg_url: str, topic_prefix: str, redis_url: str,
                                                          redis_prefix: str) -> None:
    postgres, redis = Link(upstream_of(pg_url)), Link(urlsplit(redis_url).port or 6379)
    settings = settings_for("postgres", pg_url=with_port(pg_url, postgres.port), topic_prefix=topic_prefix,
                            redis_url=with_port(redis_url, redis.port), redis_prefix=redis_prefix,
                            command_timeout_seconds=COMMAND_TIMEOUT)
    seen = Outcomes()
    async with links(postgres, redis), serving(settings) as (client, _, _):
        await create_projects(client, PROJECTS)
        async with loaded(client, seen):
            redis.cut()  # the cache away: reads fall back to PostgreSQL, commands go on
            redis_cut = time.monotonic()
            assert await status(client, "/v1/projects/p-0") == 200
            await asyncio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - redis_cut)))
            redis.heal()
            assert acked_between(seen, redis_cut, time.monotonic()) > 0, "commands stopped without the cache"
            postgres.cut()  # the log and the read models away: nothing is acknowledged, the process stays live
            cut = time.monotonic()
            # Not ready (or too slow to say, which an orchestrator takes as not ready), and still live.
            assert await status(client, "/health/ready", timeout=1.0) in (503, 0)
            assert await status(client, "/health/live", timeout=3.0) == 200
            await asyncio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - cut)))
            postgres.heal()
            healed = time.monotonic()
            assert acked_between(seen, cut + SETTLE, healed) == 0, "acknowledged while the log was away"
            await until(client, "/health/ready", 200, RECOVERY_SECONDS)
        answered_and_recovered(seen, healed)
        caught_up = await check_invariants(settings, pg_url, set(seen.sent))
    report("postgres+redis", seen, healed, caught_up)


@pytest.fixture
def broker() -> Iterator[tuple[Tansu, int]]:
    """A broker of this test's own, whose metadata sends clients to the link's port rather than its own."""
    port = free_port()
    tansu = Tansu(advertised_port=port)
    yield tansu, port
    tansu.stop()


async def test_the_broker_unreachable_under_load(broker: tuple[Tansu, int], pg_url: str, topic_prefix: str,
                                                 redis_url: str, redis_prefix: str) -> None:
    tansu, port = broker
    link = Link(tansu.port, port)
    settings: Settings = settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=f"127.0.0.1:{port}",
                                      redis_url=redis_url, redis_prefix=redis_prefix,
                            command_timeout_seconds=COMMAND_TIMEOUT)
    seen = Outcomes()
    async with links(link), serving(settings) as (client, _, _):
        await create_projects(client, PROJECTS)
        async with loaded(client, seen):
            link.cut()
            cut = time.monotonic()
            assert await status(client, "/health/live") == 200
            await asyncio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - cut)))
            link.heal()
            healed = time.monotonic()
            assert acked_between(seen, cut + SETTLE, healed) == 0, "acknowledged while the broker was away"
            await until(client, "/health/ready", 200, RECOVERY_SECONDS)
        answered_and_recovered(seen, healed)
        caught_up = await check_invariants(settings, pg_url, set(seen.sent))
    report("broker", seen, healed, caught_up)


async def test_a_command_not_decided_in_time_is_decided_once_and_its_retry_answers_it(
        pg_url: str, topic_prefix: str) -> None:
    """``503 outcome_pending`` while the log is away does not withdraw the command: it lands once healed, and
    the retry with its ``command_id`` answers that outcome (replayed), one event in the log."""
    postgres = Link(upstream_of(pg_url))
    settings = settings_for("postgres", pg_url=with_port(pg_url, postgres.port), topic_prefix=topic_prefix,
                            command_timeout_seconds=0.5)
    async with links(postgres), serving(settings) as (client, _, _):
        await create_projects(client, 1)
        postgres.cut()
        body = cost("pending-1", 0)
        pending = await client.post("/v1/commands", json=body)
        assert pending.status_code == 503 and pending.json()["code"] == "outcome_pending", pending.text
        assert pending.headers["retry-after"].isdigit()
        postgres.heal()
        seen = Outcomes()
        assert await send_until_decided(client, body, seen, time.monotonic() + RECOVERY_SECONDS) == 200
        again = await client.post("/v1/commands", json=body)
        assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true", again.headers
        assert again.json()["position"] == seen.acked["pending-1"]
        await check_invariants(settings, pg_url, {"pending-1"})
