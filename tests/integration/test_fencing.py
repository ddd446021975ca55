"""On the PostgreSQL log the (topic, partition, offset) key fences: two processes that both believe they
own every partition can never both get a write acknowledged on a stale state."""

from __future__ import annotations

from decimal import Decimal

import httpx

from tests.integration.harness import command, read_events, running, settings_for


async def send(client: httpx.AsyncClient, cid: str, amount: str) -> httpx.Response:
    """A client that retries on 503 with the same command_id, as every client should."""
    for _ in range(10):
        r = await command(client, "project.add_cost", "project:p-1", {"amount": amount, "reason": "r"},
                          command_id=cid)
        if r.status_code != 503:
            return r
        assert r.json()["code"] == "not_owner"
    raise AssertionError(f"{cid} was never decided")


async def test_two_writers_on_one_postgres_log_never_overspend(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings) as (a, runtime_a), running(settings) as (b, _):
        created = await command(a, "project.create", "project:p-1",
                                {"title": "t", "currency": "EUR", "budget_total": "10.00"})
        assert created.status_code == 200
        # b restored before the project existed; a and b now take turns on one stream.
        answers = []
        for i in range(8):
            answers.append(await send(a if i % 2 else b, f"c-{i}", "3.00"))
        replay = await send(b, "c-1", "3.00")  # decided by a; b must answer the same, not decide again

        accepted = [r for r in answers if r.status_code == 200]
        assert [r.status_code for r in answers].count(200) == 3
        assert all(r.json()["code"] == "budget_exceeded" for r in answers if r.status_code == 409)
        assert replay.json() == answers[1].json()
        assert runtime_a.log is not None
        events = await read_events(runtime_a.log, settings.events_topic)
        costs = [e for e in events if e.envelope.type == "project.cost_added"]
        assert sorted(e.envelope.command_id for e in costs) == sorted(r.json()["command_id"] for r in accepted)
        assert [e.envelope.stream_version for e in events] == list(range(1, len(events) + 1))
        token = ",".join(r.json()["position"] for r in accepted)
        doc = (await a.get("/v1/projects/p-1", params={"consistent_with": token})).json()
        assert Decimal(doc["budget"]["spent"]) == Decimal("9.00")
