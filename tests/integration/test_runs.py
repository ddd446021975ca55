"""Agent runs over real services, on both log engines: the list, a run's summary, its changes and effects."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from blackboard.config import Settings
from blackboard.query_api import runs
from tests.integration.harness import command, running

RUN_A = {"run_id": "run-a", "model": "model-a", "prompt_hash": "sha256:aa"}
RUN_B = {"run_id": "run-b", "model": "model-b", "prompt_hash": "sha256:bb"}


async def ok(client: httpx.AsyncClient, type_: str, stream: str, payload: dict[str, Any],
             agent: dict[str, str] | None = None) -> dict[str, Any]:
    extra = {"agent": agent} if agent else {}
    response = await command(client, type_, stream, payload, **extra)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def read(client: httpx.AsyncClient, path: str, token: str, **params: Any) -> Any:
    response = await client.get(path, params=params, headers={"Blackboard-Consistency": token})
    assert response.status_code == 200, response.text
    return response.json()


async def two_runs(client: httpx.AsyncClient) -> tuple[list[str], str]:
    """Run A over two projects and two tasks, interleaved with run B editing some of the same shots.

    Returns the event ids run A appended, in the order it appended them, and the last position.
    """
    for p in ("p-1", "p-2"):
        await ok(client, "project.create", f"project:{p}", {"title": p, "currency": "EUR", "budget_total": "100"})
        await ok(client, "project.create_shot", f"project:{p}", {"shot_id": "s-1", "fields": {"status": "todo"}})
    a_events: list[str] = []
    steps: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        ("project.update_shot", "project:p-1", {"shot_id": "s-1", "patch": {"status": "done", "lens": 35},
                                                "preconditions": {"status": "todo"}}, RUN_A),
        ("project.update_shot", "project:p-1", {"shot_id": "s-1", "patch": {"note": "b"},
                                                "preconditions": {}}, RUN_B),
        ("project.add_cost", "project:p-1", {"amount": "12.5", "reason": "render"}, RUN_A),
        ("project.reserve_budget", "project:p-2", {"reservation_id": "r-1", "amount": "20", "reason": "x"}, RUN_A),
        ("project.update_shot", "project:p-2", {"shot_id": "s-1", "patch": {"status": "wip"},
                                                "preconditions": {}}, RUN_B),
        ("task.create", "task:t-1", {"name": "render"}, RUN_A),
        ("task.create", "task:t-2", {"name": "review"}, RUN_A),
        ("project.put_dna", "project:p-2", {"key": "hero", "value": {"hair": "red"}, "expected_version": 0}, RUN_A),
    ]
    position = ""
    for type_, stream, payload, agent in steps:
        body = await ok(client, type_, stream, payload, agent)
        position = body["position"]
        if agent is RUN_A:
            a_events += [e["event_id"] for e in body["events"]]
    return a_events, position


async def test_a_run_is_listed_summarised_and_its_changes_are_exactly_its_events(settings: Settings) -> None:
    async with running(settings) as (client, _):
        a_events, token = await two_runs(client)

        page = await read(client, "/v1/runs", token)
        assert [r["id"] for r in page["items"]] == ["run-a", "run-b"]  # the run active last first
        only = await read(client, "/v1/runs", token, model="model-a")
        assert [(r["id"], r["events"], r["commands"]) for r in only["items"]] == [("run-a", 6, 6)]
        assert (await read(client, "/v1/runs", token, principal="nobody"))["items"] == []

        run = await read(client, "/v1/runs/run-a", token)
        assert run["models"] == ["model-a"] and run["prompt_hashes"] == ["sha256:aa"]
        assert run["outcomes"] == {"accepted": 6} and run["by_type"]["task.created"] == 2
        assert [s["stream"] for s in run["streams"]] == ["project:p-1", "project:p-2", "task:t-1", "task:t-2"]
        money = {m["project_id"]: (Decimal(m["spent"]), Decimal(m["reserved"])) for m in run["money"]}
        assert money == {"p-1": (Decimal("12.5"), Decimal(0)), "p-2": (Decimal(0), Decimal(20))}

        changes = await read(client, "/v1/runs/run-a/changes", token, page_size=4)
        rest = await read(client, "/v1/runs/run-a/changes", token, page_size=4, cursor=changes["next_cursor"])
        items = changes["items"] + rest["items"]
        assert "next_cursor" not in rest
        assert [e["event_id"] for e in items] == a_events
        first = items[0]
        assert {(c["path"], c["from"], c["to"]) for c in first["changes"]} >= {
            ("/shots/s-1/fields/status", "todo", "done"), ("/shots/s-1/fields/lens", None, 35)}

        missing = await client.get("/v1/runs/run-zz")
        assert missing.status_code == 404 and missing.json()["code"] == "run_not_found"
        no_body = await client.post("/v1/runs/run-zz/rollback")
        assert no_body.status_code == 404 and no_body.json()["code"] == "run_not_found"
        bad = await client.get("/v1/runs/run-a/changes", params={"cursor": "nope"})
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"


async def test_effects_follow_causation_to_the_alert_a_run_caused(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await ok(client, "project.create", "project:p-9", {"title": "t", "currency": "EUR", "budget_total": "100"})
        spent = await ok(client, "project.add_cost", "project:p-9", {"amount": "85", "reason": "x"}, RUN_A)
        cost_event = spent["events"][0]["event_id"]
        effects: dict[str, Any] = {"items": []}
        for _ in range(100):  # the alert manager sends its command once it has seen the cost
            effects = await read(client, "/v1/runs/run-a/effects", spent["position"])
            if effects["items"]:
                break
            await asyncio.sleep(0.1)
        alert = effects["items"][0]
        assert alert["entry"]["type"] == "project.budget_alert_raised"
        assert alert["chain"] == [cost_event] and alert["depth"] == 1
        changes = await read(client, "/v1/runs/run-a/changes", spent["position"])
        assert [e["event_id"] for e in changes["items"]] == [cost_event]  # the alert is an effect, not a change


async def test_a_runs_events_are_read_through_its_index(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        await two_runs(client)
        assert runtime.reads is not None
        async with runtime.reads.pool.acquire() as conn:
            await conn.execute("SET enable_seqscan = off")  # a tiny table: ask whether an index can answer at all
            # The statements the routes run, as they run them (for the default tenant).
            first = (datetime.fromisoformat("0001-01-01T00:00:00+00:00"), -1, -1)
            plans = [
                await conn.fetchval("EXPLAIN (FORMAT JSON) " + runs._CHANGES, "run-a", *first, 100, "default"),
                await conn.fetchval("EXPLAIN (FORMAT JSON) " + runs._CAUSED, ["e-1"], "run-a", 100, "default"),
                await conn.fetchval("EXPLAIN (FORMAT JSON) " + runs._SUMMARY, "run-a", "default"),
            ]
            await conn.execute("RESET enable_seqscan")
    assert "change_log_agent_run_idx" in plans[0] and "Seq Scan" not in plans[0]
    assert "change_log_causation_idx" in plans[1] and "Seq Scan" not in plans[1]
    assert "change_log_agent_run_idx" in plans[2] and "Seq Scan" not in plans[2]


async def test_effects_follow_a_saga_the_run_started_through_its_steps(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await ok(client, "project.create", "project:p-1", {"title": "t", "currency": "EUR", "budget_total": "100"})
        started = await ok(client, "saga.start_artifact", "saga:sg-1", {
            "project_id": "p-1", "amount": "10", "task": {"name": "render", "max_attempts": 1},
            "artifact": {"artifact_id": "a-1", "kind": "video", "uri": "s3://bucket/a-1.mp4"}}, RUN_A)
        saga_event = started["events"][0]["event_id"]
        wanted = {"project.budget_reserved", "saga.step_recorded", "task.created"}
        by_type: dict[str, Any] = {}
        for _ in range(600):  # the saga manager reserves, then records the step and creates the task
            effects = await read(client, "/v1/runs/run-a/effects", started["position"])
            by_type = {e["entry"]["type"]: e for e in effects["items"]}
            if wanted <= by_type.keys():
                break
            await asyncio.sleep(0.05)
        assert wanted <= by_type.keys(), sorted(by_type)
        reserved = by_type["project.budget_reserved"]
        assert reserved["chain"] == [saga_event] and reserved["depth"] == 1
        step = by_type["saga.step_recorded"]
        assert step["depth"] == 2 and step["chain"] == [saga_event, reserved["entry"]["event_id"]]


async def test_a_rollback_body_passes_the_front_every_body_passes(settings: Settings) -> None:
    async with running(settings) as (client, _):
        path = "/v1/runs/run-a/rollback"
        deep = await client.post(path, content=b"[" * 5000 + b"]" * 5000, headers={"Content-Type": "application/json"})
        assert deep.status_code == 422, deep.text
        broken = await client.post(path, content=b"{", headers={"Content-Type": "application/json"})
        assert broken.status_code == 400 and broken.json()["code"] == "malformed_json"
        text = await client.post(path, content=b"{}", headers={"Content-Type": "text/plain"})
        assert text.status_code == 415
        nul = await client.post(path, json={"dry_run": True, "consistent_with": "\u0000"})
        assert nul.status_code == 422, nul.text
