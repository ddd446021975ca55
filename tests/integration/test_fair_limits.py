"""Fair rate limits: per tenant and per principal, shared by every process through Redis; a tenant's flood fills
only its own window, so another tenant is never limited by it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from blackboard.limits import Limits, RateLimited, RateLimiter
from blackboard.schemas.auth import MODE_SCOPES, Principal
from tests.integration.harness import running, settings_for
from tests.integration.tokens import bearer, claims, jwt_settings, token, write_jwks

LIMIT = 5


async def _window_start() -> None:
    """Wait for the start of the next one-second window, so a test's requests do not straddle two."""
    await asyncio.sleep(1 - time.time() % 1 + 0.02)


async def test_processes_share_their_counts_through_redis(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        # Two limiters: two processes of one deployment.
        one, two = (RateLimiter(Limits(None, 3), lambda: client, redis_prefix) for _ in range(2))
        acme, beta = Principal("a", MODE_SCOPES["rw"], "acme"), Principal("b", MODE_SCOPES["rw"], "beta")
        await _window_start()
        for limiter in (one, two, one):
            await limiter.check(acme, "a")
        with pytest.raises(RateLimited) as over:
            await two.check(acme, "a")
        assert over.value.status == 429 and int(over.value.headers["Retry-After"]) >= 1
        await two.check(beta, "b")  # another tenant's window is its own
    finally:
        await client.aclose()


async def test_a_full_tenant_window_is_refused_without_asking_redis_until_the_next_window(
        redis_url: str, redis_prefix: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        one, two = (RateLimiter(Limits(None, 3), lambda: client, redis_prefix) for _ in range(2))
        acme, beta = Principal("a", MODE_SCOPES["rw"], "acme"), Principal("b", MODE_SCOPES["rw"], "beta")
        await _window_start()
        window = int(time.time())
        for _ in range(3):
            await one.check(acme, "a")
        for _ in range(5):  # the first refusal counts; the others are refused by what this process has seen
            with pytest.raises(RateLimited):
                await one.check(acme, "a")
        key = f"{redis_prefix}rl:t:acme:{window}"
        assert int(await client.get(key) or 0) == 4
        with pytest.raises(RateLimited):  # another process learns it from the shared count
            await two.check(acme, "a")
        assert int(await client.get(key) or 0) == 5
        await one.check(beta, "b")  # another tenant's window is its own
        await _window_start()
        await one.check(acme, "a")  # a new window: the tenant is admitted again
    finally:
        await client.aclose()


async def test_without_redis_each_process_counts_for_itself() -> None:
    limiter = RateLimiter(Limits(2, None), lambda: None, "bb:")
    alice, bob = Principal("alice", MODE_SCOPES["ro"]), Principal("bob", MODE_SCOPES["ro"])
    await _window_start()
    await limiter.check(alice, "alice")
    await limiter.check(alice, "alice")
    with pytest.raises(RateLimited):
        await limiter.check(alice, "alice")
    await limiter.check(bob, "bob")


async def test_a_tenant_flooding_at_ten_times_its_limit_never_limits_another(
        pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", "k1")
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                            redis_prefix=redis_prefix, rate_limit_per_tenant_per_second=LIMIT,
                            **jwt_settings(jwks))
    flooders = [bearer(token(claims(f"a-{i}", tenant="tenant-a", scope="blackboard:read"))) for i in range(5)]
    steady = bearer(token(claims("b-1", tenant="tenant-b", scope="blackboard:read")))
    async with running(settings) as (client, _):
        assert (await client.get("/v1/tasks", headers=steady)).status_code == 200  # the JWKS is loaded
        await _window_start()
        flood, seen = await asyncio.gather(_flood(client, flooders, seconds=2.0), _steady(client, steady, 2.0))
    limited = [r for r in flood if r.status_code == 429]
    # Two seconds span at most three one-second windows, each letting LIMIT through.
    assert len(flood) >= 10 * LIMIT * 2 - LIMIT and len(flood) - len(limited) <= 3 * LIMIT
    assert all(r.json()["code"] == "rate_limited" and r.headers["retry-after"].isdigit() for r in limited)
    assert seen and {r.status_code for r in seen} == {200}


async def _flood(client: httpx.AsyncClient, who: list[dict[str, str]], seconds: float) -> list[httpx.Response]:
    """Ten times the tenant's limit, spread over its principals, for ``seconds``."""
    answers: list[httpx.Response] = []
    start = time.monotonic()
    for tick in range(int(seconds * 10)):
        batch = [client.get("/v1/tasks", headers=who[i % len(who)]) for i in range(LIMIT)]
        answers += await asyncio.gather(*batch)
        await asyncio.sleep(max(0.0, start + (tick + 1) / 10 - time.monotonic()))
    return answers


async def _steady(client: httpx.AsyncClient, headers: dict[str, str], seconds: float) -> list[httpx.Response]:
    """Three requests a second, below the tenant's limit."""
    answers = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        answers.append(await client.get("/v1/tasks", headers=headers))
        await asyncio.sleep(1 / 3)
    return answers
