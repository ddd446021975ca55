"""``blackboard runs`` against a served runtime: list, show, changes, effects and a dry-run rollback."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from blackboard.config import Settings
from tests.integration.harness import command, serving

RUN = {"run_id": "run-cli", "model": "m-1"}


async def cli(url: str, *args: str) -> tuple[int, Any, str]:
    """``blackboard runs <args>`` in a process of its own (the server answers on this test's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "blackboard.cli", "runs", *args, "--url", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else None, err.decode()


async def test_the_runs_commands_read_a_run_and_plan_its_rollback(settings: Settings) -> None:
    async with serving(settings) as (client, _, url):
        for type_, payload in (("project.create", {"title": "t", "currency": "EUR", "budget_total": "10"}),
                               ("project.add_cost", {"amount": "4", "reason": "x"})):
            body = {"agent": RUN} if type_ == "project.add_cost" else {}
            response = await command(client, type_, "project:p-1", payload, **body)
            assert response.status_code == 200, response.text
        await client.get("/v1/runs/run-cli", headers={"Blackboard-Consistency": response.json()["position"]})

        code, listed, _ = await cli(url, "list", "--format", "json")
        assert code == 0 and [r["id"] for r in listed["items"]] == ["run-cli"]
        code, shown, _ = await cli(url, "show", "run-cli")
        assert code == 0 and shown["money"][0]["spent"] == "4"
        code, changes, _ = await cli(url, "changes", "run-cli")
        assert code == 0 and [e["type"] for e in changes["items"]] == ["project.cost_added"]
        code, plan, _ = await cli(url, "rollback", "run-cli", "--dry-run")
        assert code == 0 and [c["type"] for c in plan["commands"]] == ["project.refund_cost"]
        code, _, err = await cli(url, "show", "run-none")
        assert code == 1 and "run_not_found" in err
