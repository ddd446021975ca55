"""Races the decider must win without locks: 20 agents against one budget, two holders for one lease."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

from blackboard.config import Settings
from blackboard.schemas.lease import LeaseGranted, LeaseReleased, LeaseRenewed
from blackboard.schemas.project import (
    BudgetReserved,
    CostAdded,
    ProjectCreated,
    ReservationCommitted,
    ReservationReleased,
)
from blackboard.schemas.registry import decode_event
from tests.integration.harness import command, read_events, running

AGENTS, ROUNDS, TOTAL = 20, 6, Decimal(100)


async def test_twenty_agents_reserve_and_commit_against_one_budget(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        assert runtime.log is not None
        created = await command(client, "project.create", "project:p-1",
                                {"title": "T", "currency": "EUR", "budget_total": str(TOTAL)})
        assert created.status_code == 200

        async def agent(n: int) -> None:
            rng = random.Random(n)
            for r in range(ROUNDS):
                rid = f"agent-{n}-{r}"
                amount = Decimal(rng.randint(1, 1500)) / 100
                reserve = await command(client, "project.reserve_budget", "project:p-1",
                                        {"reservation_id": rid, "amount": str(amount), "reason": "render"})
                assert reserve.status_code in (200, 409), reserve.text
                if reserve.status_code == 409:
                    assert reserve.json()["code"] == "budget_exceeded"
                    continue
                await asyncio.sleep(rng.random() / 50)
                if rng.random() < 0.7:
                    spend = (amount * Decimal(rng.randint(0, 100)) / 100).quantize(Decimal("0.01"))
                    done = await command(client, "project.commit_reservation", "project:p-1",
                                         {"reservation_id": rid, "amount": str(spend)})
                else:
                    done = await command(client, "project.release_reservation", "project:p-1", {"reservation_id": rid})
                assert done.status_code == 200, done.text

        await asyncio.gather(*(agent(n) for n in range(AGENTS)))
        last = await command(client, "project.add_cost", "project:p-1", {"amount": "0.01", "reason": "probe"})
        token = last.json()["position"] if last.status_code == 200 else None

        events = [decode_event(e.envelope.type, e.envelope.schema_version, e.envelope.payload)
                  for e in await read_events(runtime.log, settings.events_topic)]
        total = spent = reserved = Decimal(0)
        reserved_sum = settled_sum = Decimal(0)
        reservations = 0
        for event in events:
            match event:
                case ProjectCreated(budget_total=t):
                    total = t
                case BudgetReserved(amount=a):
                    reserved, reserved_sum, reservations = reserved + a, reserved_sum + a, reservations + 1
                case ReservationCommitted(amount=a, released=rest):
                    spent, reserved, settled_sum = spent + a, reserved - a - rest, settled_sum + a + rest
                case ReservationReleased(amount=a):
                    reserved, settled_sum = reserved - a, settled_sum + a
                case CostAdded(amount=a):
                    spent += a
            # Reservations never exceed what remains; spent is never above the total.
            assert spent + reserved <= total and spent <= total
        assert reservations >= AGENTS, "the agents must have raced for real"
        # Every reservation ended: committed + released = reserved, nothing is held for finished work.
        assert reserved == 0 and settled_sum == reserved_sum
        doc = (await client.get("/v1/projects/p-1/budget",
                                headers={"Blackboard-Consistency": token} if token else {})).json()
        if token:
            assert (Decimal(doc["spent"]), Decimal(doc["reserved"])) == (spent, Decimal(0))


async def test_two_holders_race_for_one_lease(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        assert runtime.log is not None
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + 3.0

        async def holder(name: str, seed: int) -> int:
            rng, grants = random.Random(seed), 0
            while loop.time() < stop_at:
                got = await command(client, "lease.acquire", "lease:gpu-0", {"holder": name, "ttl_seconds": 1})
                if got.status_code == 409:
                    assert got.json()["code"] == "lease_held"
                    await asyncio.sleep(0.02)
                    continue
                assert got.status_code == 200, got.text
                grants += 1
                token = got.json()["events"][-1]["payload"]["token"]
                await asyncio.sleep(rng.random() / 10)
                if rng.random() < 0.25:
                    await asyncio.sleep(1.05)  # walk away: the lease must expire by itself
                    continue
                released = await command(client, "lease.release", "lease:gpu-0", {"holder": name, "token": token})
                assert released.status_code in (200, 409), released.text
            return grants

        counts = await asyncio.gather(holder("a", 1), holder("b", 2))
        assert all(counts), counts

        recorded = await read_events(runtime.log, settings.events_topic)
        holder_now: str | None = None
        until = None
        tokens: list[int] = []
        expired = 0
        for ev in sorted(recorded, key=lambda e: e.envelope.stream_version):
            event = decode_event(ev.envelope.type, ev.envelope.schema_version, ev.envelope.payload)
            at = ev.envelope.occurred_at
            match event:
                case LeaseGranted(holder=h, token=t, expires_at=e):
                    # Exactly one holds at any time: a grant only when nobody holds it (or their time is up).
                    assert holder_now is None or (until is not None and until <= at), (holder_now, until, at)
                    tokens.append(t)
                    holder_now, until = h, e
                case LeaseRenewed(holder=h, expires_at=e):
                    assert h == holder_now
                    until = e
                case LeaseReleased(why=why):
                    expired += why == "expired"
                    holder_now, until = None, None
        assert tokens == sorted(set(tokens)) and tokens == list(range(1, len(tokens) + 1)), tokens
        assert expired >= 1, "an expired lease must have been granted again"
