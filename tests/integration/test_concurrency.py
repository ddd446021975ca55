"""Many clients at once: budgets never overspent, each accepted command once in the log, duplicates once."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from blackboard.config import Settings
from tests.integration.harness import command, read_events, running, settings_for

AMOUNTS = ["7.50", "12.25", "20.00", "3.10"]


@pytest.fixture(params=["postgres", "kafka"])
def settings(request: pytest.FixtureRequest, pg_url: str, topic_prefix: str) -> Settings:
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return settings_for(request.param, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka)


async def test_fifty_clients_never_overspend(settings: Settings) -> None:
    projects = [f"p-{i}" for i in range(5)]
    async with running(settings) as (client, runtime):
        for pid in projects:
            r = await command(client, "project.create", f"project:{pid}",
                              {"title": pid, "currency": "EUR", "budget_total": "100.00"})
            assert r.status_code == 200

        async def agent(n: int) -> list[tuple[str, str, str, int, dict[str, Any]]]:
            rng, sent = random.Random(n), []
            for i in range(6):
                pid, amount, cid = rng.choice(projects), rng.choice(AMOUNTS), f"c-{n}-{i}"
                r = await command(client, "project.add_cost", f"project:{pid}",
                                  {"amount": amount, "reason": "agent"}, command_id=cid)
                sent.append((cid, pid, amount, r.status_code, r.json()))
            return sent

        results = [x for batch in await asyncio.gather(*(agent(n) for n in range(50))) for x in batch]
        assert {status for *_, status, _ in results} <= {200, 409}
        assert all(body["code"] == "budget_exceeded" for *_, status, body in results if status == 409)
        accepted = [(cid, pid, Decimal(a)) for cid, pid, a, status, _ in results if status == 200]
        refused = {cid for cid, _, _, status, _ in results if status == 409}
        assert accepted and refused, "the budgets must allow some costs and refuse others"

        token = ",".join(body["position"] for *_, status, body in results if status == 200)
        for pid in projects:
            doc = (await client.get(f"/v1/projects/{pid}", params={"consistent_with": token})).json()
            spent = sum((a for _, p, a in accepted if p == pid), Decimal(0))
            assert Decimal(doc["budget"]["spent"]) == spent <= Decimal("100.00")

        assert runtime.log is not None
        events = await read_events(runtime.log, settings.events_topic)
        per_command = Counter(e.envelope.command_id for e in events if e.envelope.type == "project.cost_added")
        assert per_command == Counter({cid: 1 for cid, _, _ in accepted})
        assert not refused & set(per_command)


async def test_duplicate_command_id_sent_concurrently_appends_once(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        await command(client, "project.create", "project:p-1",
                      {"title": "t", "currency": "EUR", "budget_total": "1000"})
        answers = await asyncio.gather(*(
            command(client, "project.add_cost", "project:p-1", {"amount": "1.00", "reason": "x"},
                    command_id="same") for _ in range(20)))
        assert {a.status_code for a in answers} == {200}
        assert len({a.json()["version"] for a in answers}) == 1
        assert sum(a.headers.get("idempotent-replayed") == "true" for a in answers) == 19

        reused = await command(client, "project.add_cost", "project:p-1", {"amount": "2.00", "reason": "x"},
                               command_id="same")
        assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
        other_stream = await command(client, "task.create", "task:t-9", {"name": "n"}, command_id="same")
        assert other_stream.status_code == 422 and other_stream.json()["code"] == "idempotency_key_reused"

        assert runtime.log is not None
        events = await read_events(runtime.log, settings.events_topic)
        assert sum(e.envelope.command_id == "same" for e in events) == 1


async def test_first_outcome_survives_a_restart(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await command(client, "task.create", "task:t-1", {"name": "n"})
        accepted = await command(client, "task.claim", "task:t-1", {"node": "n-1"}, command_id="a-1")
        # Refused now; once the task has failed the same command would be legal if decided again.
        refused = await command(client, "task.set_status", "task:t-1", {"status": "pending"}, command_id="r-1")
        assert accepted.status_code == 200 and refused.status_code == 409
        await command(client, "task.start", "task:t-1", {"token": 1})
        await command(client, "task.fail", "task:t-1", {"token": 1, "error": "boom", "retryable": False})
    async with running(settings) as (client, runtime):
        again_accepted = await command(client, "task.claim", "task:t-1", {"node": "n-1"}, command_id="a-1")
        again_refused = await command(client, "task.set_status", "task:t-1", {"status": "pending"},
                                      command_id="r-1")
        assert again_accepted.status_code == 200 and again_accepted.json() == accepted.json()
        assert again_refused.status_code == 409 and again_refused.json() == refused.json()
        assert again_accepted.headers["idempotent-replayed"] == "true"
        assert runtime.log is not None
        events = await read_events(runtime.log, settings.events_topic)
        assert [e.envelope.stream_version for e in events] == [1, 2, 3, 4]


async def test_the_outcome_of_any_command_can_be_asked_for(settings: Settings) -> None:
    async with running(settings) as (client, _):
        accepted = await command(client, "task.create", "task:t-1", {"name": "n"}, command_id="ask-1")
        refused = await command(client, "task.set_status", "task:t-1", {"status": "running"}, command_id="ask-2")
        assert (await client.get("/v1/commands/ask-1")).json() == accepted.json()
        asked = await client.get("/v1/commands/ask-2")
        assert (asked.status_code, asked.json()) == (200, refused.json())
        unknown = await client.get("/v1/commands/never-sent")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_command")
