"""The read pool's bounds answer 503 with Retry-After instead of hanging, and show in the metrics; the process
managers' backoff starts again from its shortest wait after a healthy run."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from blackboard.config import Settings
from blackboard.events.postgres import PostgresLog
from blackboard.processes.manager import Intent, Seen
from blackboard.processes.runtime import ProcessRuntime
from blackboard.schemas.api import Outcome
from tests.integration.harness import command, running, settings_for
from tests.integration.test_metrics import sample, scrape

PROJECT = {"title": "t", "currency": "EUR", "budget_total": "10.00"}


@pytest.fixture
def settings(pg_url: str, topic_prefix: str) -> Settings:
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, read_pool_max_size=1,
                        read_pool_acquire_timeout_seconds=0.3, read_statement_timeout_seconds=0.3)


async def test_a_busy_read_pool_answers_503_with_retry_after(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        made = await command(client, "project.create", "project:p-1", PROJECT)
        token = made.json()["position"]
        assert (await client.get("/v1/projects/p-1", params={"consistent_with": token})).status_code == 200
        assert runtime.read_pool is not None
        before = await scrape(client)
        async with runtime.read_pool.acquire():  # the only connection, held: no read can have one
            started = time.monotonic()
            busy = await client.get("/v1/projects/p-1")
            waited = time.monotonic() - started
        assert (busy.status_code, busy.json()["code"]) == (503, "read_pool_exhausted"), busy.text
        assert busy.headers["retry-after"] == "1" and waited < 5
        after = await scrape(client)
        moved = (sample(after, "blackboard_read_pool_timeouts_total", reason="acquire_timeout")
                 - sample(before, "blackboard_read_pool_timeouts_total", reason="acquire_timeout"))
        assert moved == 1
        assert sample(after, "blackboard_read_pool_connections", state="max") == 1
        assert (await client.get("/v1/projects/p-1")).status_code == 200, "free again: reads answer again"


async def test_a_read_past_its_statement_timeout_answers_503(settings: Settings, pg_url: str) -> None:
    async with running(settings) as (client, runtime):
        made = await command(client, "project.create", "project:p-1", PROJECT)
        await client.get("/v1/projects/p-1", params={"consistent_with": made.json()["position"]})
        assert runtime.generation is not None
        locker = await asyncpg.connect(pg_url)
        try:
            async with locker.transaction():  # a writer holding the table: the read waits on its lock
                await locker.execute(f'LOCK TABLE "{runtime.generation.schema}".projects IN ACCESS EXCLUSIVE MODE')
                slow = await client.get("/v1/projects/p-1")
        finally:
            await locker.close()
        assert (slow.status_code, slow.json()["code"]) == (503, "statement_timeout"), slow.text
        assert slow.headers["retry-after"] == "1"
        assert (await client.get("/v1/projects/p-1")).status_code == 200


class Flaky:
    """A manager that fails the run once it has been caught up for a while: a healthy run, then a failure."""

    name = "flaky"

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.failures: list[float] = []

    def initial(self) -> Any:
        self.starts.append(time.monotonic())
        return None

    def handle(self, state: Any, seen: Seen) -> tuple[Any, list[Intent]]:
        return state, []

    def pending(self, state: Any) -> list[Intent]:
        return []

    def rejected(self, state: Any, sent: Intent, code: str) -> list[Intent]:
        return []

    def due(self, state: Any) -> datetime | None:
        if time.monotonic() - self.starts[-1] > 0.4:
            self.failures.append(time.monotonic())
            raise RuntimeError("flaky manager")
        return None


async def test_the_process_managers_backoff_resets_after_a_healthy_run(pg_url: str, topic_prefix: str) -> None:
    log = PostgresLog(pg_url, schema="log_" + topic_prefix.strip(".").lower())
    await log.start()
    await log.create_topic(f"{topic_prefix}events", 1)

    async def send(_: Intent) -> Outcome:
        raise AssertionError("nothing is sent")

    flaky = Flaky()
    runtime = ProcessRuntime(log, topic=f"{topic_prefix}events", managers=[flaky], send=send, healthy_seconds=0.2)
    task = asyncio.create_task(runtime.run())
    try:
        while len(flaky.failures) < 6 and not task.done():
            await asyncio.sleep(0.05)
            assert len(flaky.starts) < 50
    finally:
        await runtime.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await log.close()
    # Each run was healthy (caught up 0.4 s) before it failed: the next starts after the shortest wait,
    # where a backoff that never resets would wait 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s.
    waits = [start - failed for failed, start in zip(flaky.failures, flaky.starts[2:], strict=False)]
    assert len(waits) >= 5 and max(waits) < 0.8, waits
