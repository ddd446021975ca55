"""Per-credential rate limits: the excess gets 429 with Retry-After, other credentials go on."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from tests.integration.harness import running, settings_for


async def test_a_flood_from_one_key_does_not_starve_another(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, rate_limit_per_second=3,
                            api_keys=SecretStr("k-a=alice:rw,k-b=bob:rw"))
    async with running(settings) as (client, _):
        flood = await asyncio.gather(*(
            client.get("/v1/tasks", headers={"X-API-Key": "k-a"}) for _ in range(12)))
        other = await client.get("/v1/tasks", headers={"X-API-Key": "k-b"})
        limited = [r for r in flood if r.status_code == 429]
        assert {r.status_code for r in flood} == {200, 429}
        # One-second windows: 3 pass in each window the flood spans (one, unless it took longer than a second).
        assert len(flood) - len(limited) >= 3 and len(limited) >= 6
        assert all(r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 0 for r in limited)
        assert other.status_code == 200
        assert (await client.get("/health/ready")).status_code == 200
