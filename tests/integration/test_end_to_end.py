"""HTTP command → event in the log → read-model row → Redis → HTTP query, on both log engines."""

from __future__ import annotations

from typing import Any

import msgspec

from blackboard.app import Runtime
from blackboard.config import Settings
from tests.integration.harness import command, read_events, running


async def test_command_to_row_and_back(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        created = await command(client, "project.create", "project:p-1",
                                {"title": "Trailer", "currency": "EUR", "budget_total": "100.00",
                                 "global_spec": {"style": "noir"}})
        assert created.status_code == 200, created.text
        assert created.json()["outcome"] == "accepted" and created.json()["version"] == 1

        first = await command(client, "project.add_cost", "project:p-1",
                              {"amount": "60.00", "reason": "render"}, command_id="cost-1")
        refused = await command(client, "project.add_cost", "project:p-1",
                                {"amount": "40.01", "reason": "render"}, command_id="cost-2")
        shot = await command(client, "project.update_shot", "project:p-1",
                             {"shot_id": "s-1", "patch": {"status": "draft"}, "expected_version": 0})
        stale = await command(client, "project.update_shot", "project:p-1",
                              {"shot_id": "s-1", "patch": {"status": "review"}, "expected_version": 0})
        assert first.status_code == 200 and shot.status_code == 200
        assert refused.status_code == 409 and refused.json()["code"] == "budget_exceeded"
        assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"

        read = await client.get("/v1/projects/p-1", headers={"Blackboard-Consistency": shot.json()["position"]})
        assert read.status_code == 200, read.text
        doc = read.json()
        assert doc["budget"]["currency"] == "EUR" and _money_equal(doc["budget"], "100", "60", "40")
        assert doc["shots"]["s-1"]["status"] == "draft" and doc["shots"]["s-1"]["version"] == 1
        assert doc["version"] == 3 and doc["global_spec"] == {"style": "noir"}

        await _assert_cached(runtime, "project", "p-1", version=3)
        await _task_flow(client)
        await _assert_history(client, shot.json()["position"])
        await _assert_log(runtime, settings)


def _money_equal(budget: dict[str, Any], total: str, spent: str, remaining: str) -> bool:
    from decimal import Decimal

    return (Decimal(budget["total"]), Decimal(budget["spent"]), Decimal(budget["remaining"])) == (
        Decimal(total), Decimal(spent), Decimal(remaining))


async def _task_flow(client: Any) -> None:
    assert (await command(client, "task.create", "task:t-1", {"name": "render", "priority": 5})).status_code == 200
    illegal = await command(client, "task.set_status", "task:t-1", {"status": "running"})
    assert illegal.status_code == 409 and illegal.json()["code"] == "illegal_transition"
    claimed = await command(client, "task.claim", "task:t-1", {"node": "n-1"})
    assert claimed.status_code == 200, claimed.text
    fencing = claimed.json()["events"][0]["payload"]["token"]
    for type_ in ("task.start", "task.complete"):
        moved = await command(client, type_, "task:t-1", {"token": fencing})
        assert moved.status_code == 200, moved.text
    token = moved.json()["position"]
    task = await client.get("/v1/tasks/t-1", params={"consistent_with": token})
    assert task.json()["status"] == "succeeded" and task.json()["version"] == 4
    listed = await client.get("/v1/tasks", params={"status": "succeeded", "consistent_with": token})
    assert [t["id"] for t in listed.json()["items"]] == ["t-1"]
    assert (await client.get("/v1/tasks", params={"status": "pending"})).json()["items"] == []


async def _assert_history(client: Any, token: str) -> None:
    history = await client.get("/v1/streams/project:p-1/history", params={"consistent_with": token})
    entries = history.json()["items"]
    assert [e["type"] for e in entries] == [
        "project.created", "project.cost_added", "project.shot_updated"]
    assert [e["version"] for e in entries] == [1, 2, 3]
    assert entries[1]["command_id"] == "cost-1" and entries[1]["actor"] == "anonymous"


async def _assert_cached(runtime: Runtime, kind: str, ident: str, *, version: int) -> None:
    assert runtime.cache is not None
    cached = await runtime.cache.get(kind, ident)
    assert cached is not None and cached.version == version
    assert msgspec.json.decode(cached.doc)["version"] == version


async def _assert_log(runtime: Runtime, settings: Settings) -> None:
    assert runtime.log is not None
    events = await read_events(runtime.log, settings.events_topic)
    by_command = {e.envelope.command_id for e in events}
    assert "cost-1" in by_command and "cost-2" not in by_command
    per_stream: dict[str, list[int]] = {}
    for e in events:
        per_stream.setdefault(e.envelope.stream, []).append(e.envelope.stream_version)
    assert per_stream == {"project:p-1": [1, 2, 3], "task:t-1": [1, 2, 3, 4]}
