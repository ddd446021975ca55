"""The metrics endpoint answers and its counters move as commands flow."""

from __future__ import annotations

import re

import httpx

from tests.integration.harness import command, running, settings_for


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def scrape(client: httpx.AsyncClient) -> str:
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_counters_move_with_commands(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings) as (client, _):
        before = await scrape(client)
        created = await command(client, "project.create", "project:m-1",
                                {"title": "t", "currency": "EUR", "budget_total": "1.00"})
        refused = await command(client, "project.add_cost", "project:m-1", {"amount": "2.00", "reason": "r"})
        await client.get("/v1/projects/m-1", params={"consistent_with": created.json()["position"]})
        assert (created.status_code, refused.status_code) == (200, 409)
        after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("blackboard_commands_total", type="project.create", outcome="accepted", tenant="default") == 1
    assert moved("blackboard_commands_total", type="project.add_cost", outcome="rejected", tenant="default") == 1
    assert moved("blackboard_append_seconds_count") >= 1
    assert moved("blackboard_projector_events_total", result="applied") >= 1
    assert moved("blackboard_http_requests_total", method="POST", path="/v1/commands", status_code="409") == 1
