"""A steady mixed load (8 clients, 80% reads, 20% commands) for a bounded time: no 5xx, budgets never
above their limits in any read, every accepted command applied once, and the projection catches up."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from decimal import Decimal

import httpx

from tests.integration.harness import command, read_events, running, settings_for

SECONDS = 6.0
PROJECTS = [f"p-{i}" for i in range(3)]


async def client_loop(client: httpx.AsyncClient, n: int, statuses: Counter[int], accepted: list[str],
                      deadline: float) -> None:
    rng = random.Random(n)
    i = 0
    while time.monotonic() < deadline:
        pid = rng.choice(PROJECTS)
        if rng.random() < 0.2:
            r = await command(client, "project.add_cost", f"project:{pid}",
                              {"amount": rng.choice(["0.50", "1.25", "2.00"]), "reason": "load"},
                              command_id=f"l-{n}-{i}")
            if r.status_code == 200:
                accepted.append(r.json()["command_id"])
        else:
            r = await client.get(f"/v1/projects/{pid}")
            if r.status_code == 200:
                budget = r.json()["budget"]
                assert Decimal(budget["spent"]) <= Decimal(budget["total"]), budget
        statuses[r.status_code] += 1
        i += 1


async def test_steady_mixed_load(pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                            redis_prefix=redis_prefix)
    async with running(settings) as (client, runtime):
        for pid in PROJECTS:
            created = await command(client, "project.create", f"project:{pid}",
                                    {"title": pid, "currency": "EUR", "budget_total": "150.00"})
            # Reads without a token are eventually consistent: let the creations be projected first.
            await client.get(f"/v1/projects/{pid}", params={"consistent_with": created.json()["position"]})
        statuses: Counter[int] = Counter()
        accepted: list[str] = []
        deadline = time.monotonic() + SECONDS
        await asyncio.gather(*(client_loop(client, n, statuses, accepted, deadline) for n in range(8)))

        assert set(statuses) <= {200, 409}, statuses
        assert statuses[200] > 100 and statuses[409] > 0, "the budgets must run out under the load"
        assert runtime.log is not None and runtime.projector is not None
        events = await read_events(runtime.log, settings.events_topic)
        costs = Counter(e.envelope.command_id for e in events if e.envelope.type == "project.cost_added")
        assert costs == Counter(dict.fromkeys(accepted, 1))
        ends = {p: await runtime.log.end_offset(settings.events_topic, p) for p in range(settings.partitions)}
        for _ in range(100):  # lag returns to 0 by itself
            if await runtime.projector.positions() == ends:
                break
            await asyncio.sleep(0.05)
        assert await runtime.projector.positions() == ends
