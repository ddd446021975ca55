"""Agent runs over gRPC: the same documents as the HTTP routes."""

from __future__ import annotations

import grpc
import pytest

from blackboard.config import Settings
from tests.integration.harness import command, running, settings_for
from tests.integration.test_grpc import Client, channel_to, same

RUN = {"run_id": "run-g", "model": "m-1"}


@pytest.fixture
def grpc_settings(pg_url: str, topic_prefix: str) -> Settings:
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, grpc_port=0)


async def test_grpc_runs_are_the_http_documents(grpc_settings: Settings) -> None:
    async with running(grpc_settings) as (http, runtime), channel_to(runtime.grpc_port) as channel:
        call = Client(channel)
        await command(http, "project.create", "project:p-1", {"title": "t", "currency": "EUR", "budget_total": "10"})
        for amount in ("1", "2"):
            spent = await command(http, "project.add_cost", "project:p-1", {"amount": amount, "reason": "x"},
                                  agent=RUN)
            assert spent.status_code == 200, spent.text
        token = spent.json()["position"]

        run = await call("GetRun", run_id="run-g", consistent_with=token)
        assert same(run, (await http.get("/v1/runs/run-g")).content)
        assert (run.events, run.by_type["project.cost_added"], run.money[0].spent) == (2, 2, "3")

        page = await call("GetRunChanges", run_id="run-g", page_size=1, consistent_with=token)
        assert same(page, (await http.get("/v1/runs/run-g/changes", params={"page_size": 1})).content)
        rest = await call("GetRunChanges", run_id="run-g", cursor=page.next_cursor)
        assert [e.payload.struct_value["amount"] for e in [*page.items, *rest.items]] == ["1", "2"]

        effects = await call("GetRunEffects", run_id="run-g", consistent_with=token)
        assert same(effects, (await http.get("/v1/runs/run-g/effects")).content)

        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call("GetRun", run_id="run-none")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
