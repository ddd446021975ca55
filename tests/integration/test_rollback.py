"""Rolling an agent run back over real services, on both log engines.

Run A writes across five projects and fifty tasks (about two hundred commands), interleaved with run
B editing some of the same shots after it. A's changes are exactly its events; its effects include
the budget alert it caused; the dry run names the fields B changed since as conflicts; applying puts
every other field back, leaves B's values, refunds A's spending and releases its holds, cancels A's
tasks without losing one; applying again appends nothing.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx

from blackboard.config import Settings
from blackboard.schemas.envelope import decode_token, encode_token
from tests.integration.harness import command, read_events, running

RUN_A = {"run_id": "run-a", "model": "model-a", "prompt_hash": "sha256:aa"}
RUN_B = {"run_id": "run-b", "model": "model-b"}
PROJECTS = [f"p-{i}" for i in range(5)]
SHOTS = [f"s-{i}" for i in range(4)]
TASKS = [f"t-{i}" for i in range(50)]


async def ok(client: httpx.AsyncClient, type_: str, stream: str, payload: dict[str, Any],
             agent: dict[str, str] | None = None) -> dict[str, Any]:
    response = await command(client, type_, stream, payload, **({"agent": agent} if agent else {}))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def read(client: httpx.AsyncClient, path: str, token: str, **params: Any) -> Any:
    response = await client.get(path, params=params, headers={"Blackboard-Consistency": token})
    assert response.status_code == 200, response.text
    return response.json()


def merged(*tokens: str | None) -> str:
    positions: dict[int, int] = {}
    for token in filter(None, tokens):
        for p, o in decode_token(token).items():
            positions[p] = max(positions.get(p, -1), o)
    return encode_token(positions)


async def rollback(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/runs/run-a/rollback", json=body)
    assert response.status_code == 200, response.text
    plan: dict[str, Any] = response.json()
    return plan


class Scenario:
    """Both runs' commands; what A sent, in order, and the last position."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client, self.token = client, ""
        self.a_events: list[str] = []

    async def send(self, type_: str, stream: str, payload: dict[str, Any], agent: dict[str, str] | None) -> None:
        body = await ok(self.client, type_, stream, payload, agent)
        self.token = merged(self.token, body["position"])
        if agent is RUN_A:
            self.a_events += [e["event_id"] for e in body["events"]]

    async def play(self) -> None:
        for p in PROJECTS:
            await self.send("project.create", f"project:{p}", {"title": p, "currency": "EUR", "budget_total": "1000",
                                                               "status": "active"}, None)
            for s in SHOTS:
                await self.send("project.create_shot", f"project:{p}", {"shot_id": s, "fields": {"status": "todo"}},
                                None)
        for i, t in enumerate(TASKS):
            await self.send("task.create", f"task:{t}", {"name": f"render {i}"}, RUN_A)
            p = PROJECTS[i % 5]
            await self.send("project.update_shot", f"project:{p}", {
                "shot_id": SHOTS[i // 5 % 4], "patch": {"status": f"take-{i}", "lens": i},
                "preconditions": {}}, RUN_A)
            await self.send("project.add_cost", f"project:{p}", {"amount": "10", "reason": f"render {i}"}, RUN_A)
        for p in PROJECTS:
            await self.send("project.reserve_budget", f"project:{p}", {"reservation_id": "hold", "amount": "50",
                                                                       "reason": "renders"}, RUN_A)
            await self.send("project.put_dna", f"project:{p}", {"key": "hero", "value": {"hair": "red"},
                                                                "expected_version": 0}, RUN_A)
            # B, after A: the lens of s-0 (a conflict), and a field A never touched.
            await self.send("project.update_shot", f"project:{p}", {"shot_id": "s-0", "patch": {"lens": 99,
                                                                    "note": "b"}, "preconditions": {}}, RUN_B)
            await self.send("project.add_cost", f"project:{p}", {"amount": "1.5", "reason": "b"}, RUN_B)
        # A's spending on p-0 crosses 80 % of its budget: the alert manager raises an alert because of it.
        await self.send("project.add_cost", "project:p-0", {"amount": "700", "reason": "final"}, RUN_A)


async def wait_effects(client: httpx.AsyncClient, token: str) -> Any:
    for _ in range(200):
        effects = await read(client, "/v1/runs/run-a/effects", token)
        if any(e["entry"]["type"] == "project.budget_alert_raised" for e in effects["items"]):
            return effects
        await asyncio.sleep(0.05)
    raise AssertionError("no budget alert among run-a's effects")


async def test_rollback_restores_what_only_the_run_changed_and_repeats_as_nothing(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        scenario = Scenario(client)
        await scenario.play()
        changes = await read(client, "/v1/runs/run-a/changes", scenario.token, page_size=500)
        assert [e["event_id"] for e in changes["items"]] == scenario.a_events and "next_cursor" not in changes
        effects = await wait_effects(client, scenario.token)
        alert = next(e for e in effects["items"] if e["entry"]["type"] == "project.budget_alert_raised")
        assert alert["entry"]["stream"] == "project:p-0" and alert["chain"][0] in scenario.a_events

        plan = await rollback(client, dry_run=True, consistent_with=scenario.token)
        assert plan["dry_run"] and {c["status"] for c in plan["commands"]} == {"planned"}
        assert sorted((c["stream"], c["path"], c["current"], c["by"]) for c in plan["conflicts"]) == [
            (f"project:{p}", "/shots/s-0/fields/lens", 99, ["anonymous"]) for p in PROJECTS]
        types = sorted({c["type"] for c in plan["commands"]})
        assert types == ["project.refund_cost", "project.release_reservation", "project.remove_dna",
                         "project.update_shot", "task.cancel"]

        applied = await rollback(client)
        assert {c["status"] for c in applied["commands"]} == {"accepted"}, applied["commands"]
        token = merged(*(c["position"] for c in applied["commands"]))
        for p in PROJECTS:
            doc = await read(client, f"/v1/projects/{p}", token)
            shots = {s["id"]: s for s in (await read(client, f"/v1/projects/{p}/shots", token))["items"]}
            assert {k: v for k, v in shots["s-0"].items() if k in ("status", "lens", "note")} == {
                "status": "todo", "lens": 99, "note": "b"}  # B's lens stays: a conflict, skipped
            assert all("lens" not in shots[s] and shots[s]["status"] == "todo" for s in SHOTS[1:])
            budget = doc["budget"]
            assert (Decimal(budget["spent"]), Decimal(budget["reserved"])) == (Decimal("1.5"), Decimal(0))
            assert "hero" not in doc.get("dna", {})
        tasks = [await read(client, f"/v1/tasks/{t}", token) for t in TASKS]
        assert {t["status"] for t in tasks} == {"cancelled"} and len(tasks) == 50

        await read(client, "/v1/runs/run-a", token)  # the audit trail has the rollback's events
        assert runtime.log is not None
        before = len(await read_events(runtime.log, settings.events_topic))
        again = await rollback(client)
        assert again["commands"] == [] and again["rollback_id"] == applied["rollback_id"]
        await asyncio.sleep(0.5)  # a process manager reacting to a repeated rollback would append by now
        assert len(await read_events(runtime.log, settings.events_topic)) == before


async def test_a_rollback_under_other_writers_keeps_every_invariant(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        for p in PROJECTS[:3]:
            await ok(client, "project.create", f"project:{p}", {"title": p, "currency": "EUR", "budget_total": "100"})
            await ok(client, "project.create_shot", f"project:{p}", {"shot_id": "s-0", "fields": {"status": "todo"}})
            await ok(client, "project.add_cost", f"project:{p}", {"amount": "30", "reason": "a"}, RUN_A)
            await ok(client, "project.reserve_budget", f"project:{p}", {"reservation_id": "hold", "amount": "40",
                                                                        "reason": "a"}, RUN_A)
            last = await ok(client, "project.update_shot", f"project:{p}", {
                "shot_id": "s-0", "patch": {"status": "done"}, "preconditions": {}}, RUN_A)
        await read(client, "/v1/runs/run-a", last["position"])
        spent_by_others: dict[str, Decimal] = {p: Decimal(0) for p in PROJECTS[:3]}
        seen: list[str] = []

        async def other_writer(p: str) -> None:
            for i in range(25):
                response = await command(client, "project.add_cost", f"project:{p}", {"amount": "2", "reason": "o"})
                if response.status_code == 200:
                    spent_by_others[p] += 2
                    seen.append(response.json()["position"])
                else:
                    assert response.json()["code"] == "budget_exceeded", response.text
                edited = await command(client, "project.update_shot", f"project:{p}", {
                    "shot_id": "s-0", "patch": {"take": i}, "preconditions": {}})
                seen.append(edited.json()["position"])

        writers = [asyncio.create_task(other_writer(p)) for p in PROJECTS[:3]]
        applied = await rollback(client)
        await asyncio.gather(*writers)
        assert {c["status"] for c in applied["commands"]} == {"accepted"}, applied["commands"]

        token = merged(*seen, *(c["position"] for c in applied["commands"]))
        for p in PROJECTS[:3]:
            budget = (await read(client, f"/v1/projects/{p}", token))["budget"]
            spent, reserved, total = (Decimal(budget[k]) for k in ("spent", "reserved", "total"))
            assert spent == spent_by_others[p] and reserved == 0 and spent + reserved <= total
            assert (await read(client, f"/v1/projects/{p}/shots/s-0", token))["status"] == "todo"
        assert runtime.reads is not None
        gaps = await runtime.reads.pool.fetchval(
            "SELECT count(*) FROM (SELECT stream, count(*) AS n, max(stream_version) AS top FROM change_log "
            "GROUP BY stream) AS s WHERE n <> top")
        assert gaps == 0  # every stream's versions are 1..n, dense
