"""The clients' agent-run reads and rollback against a real server."""

from __future__ import annotations

import asyncio

import httpx
from blackboard_client import AsyncClient, Client

from blackboard.app import Runtime

Served = tuple[httpx.AsyncClient, Runtime, str]
RUN = {"run_id": "run-sdk", "model": "m-1", "prompt_hash": "h-1"}


async def _send(raw: httpx.AsyncClient, type_: str, payload: dict[str, object], agent: bool) -> str:
    body = {"type": type_, "stream": "project:p-1", "payload": payload} | ({"agent": RUN} if agent else {})
    response = await raw.post("/v1/commands", json=body)
    assert response.status_code == 200, response.text
    position: str = response.json()["position"]
    return position


async def test_a_run_is_read_and_rolled_back_through_the_clients(served: Served) -> None:
    raw, _, url = served
    await _send(raw, "project.create", {"title": "t", "currency": "EUR", "budget_total": "10"}, False)
    await _send(raw, "project.create_shot", {"shot_id": "s-1", "fields": {"status": "todo"}}, False)
    await _send(raw, "project.add_cost", {"amount": "4", "reason": "x"}, True)
    token = await _send(raw, "project.update_shot", {"shot_id": "s-1", "patch": {"status": "done"},
                                                     "preconditions": {}}, True)
    async with AsyncClient(url) as bb:
        assert [r["id"] async for r in bb.runs(model="m-1", consistent_with=token)] == ["run-sdk"]
        run = await bb.run("run-sdk", consistent_with=token)
        assert run["events"] == 2 and run["principals"] == ["anonymous"]
        changes = [e async for e in bb.run_changes("run-sdk", page_size=1, consistent_with=token)]
        assert [e["type"] for e in changes] == ["project.cost_added", "project.shot_updated"]
        assert (await bb.run_effects("run-sdk", consistent_with=token))["items"] == []
        plan = await bb.rollback("run-sdk", dry_run=True)
        assert [c["type"] for c in plan["commands"]] == ["project.refund_cost", "project.update_shot"]
        applied = await bb.rollback("run-sdk")
        assert {c["status"] for c in applied["commands"]} == {"accepted"}
        shot = await bb.shot("p-1", "s-1", consistent_with=applied["commands"][-1]["position"])
        assert shot["status"] == "todo"

    def sync_read() -> object:
        with Client(url) as client:
            return client.run("run-sdk")["money"]

    money = await asyncio.to_thread(sync_read)
    assert money == [{"project_id": "p-1", "currency": "EUR", "spent": "4", "reserved": "0"}]
