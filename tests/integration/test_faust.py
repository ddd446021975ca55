"""A real faust worker beside Blackboard (Kafka engine, tansu): killed with SIGKILL mid-stream and started
again, it charges each task exactly once, because its command ids derive from the events it reacts to.

The worker is the starter app (examples/faust_starter/app.py) in a process of its own. Its first run
never commits an offset (commit interval longer than the run), so the second run reprocesses every
event the first one handled: the deciders must answer those repeats from their first outcome.

tansu settings faust needs: short group timeouts (tansu holds a join for the whole rebalance
timeout, and a killed member's seat until its session times out); no tables (nothing to recover
from changelog topics); faust creates only its leader topic, with one partition and one replica.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from blackboard.config import Settings
from tests.integration.harness import read_events, serving, settings_for

pytestmark = pytest.mark.slow

STARTER = Path(__file__).resolve().parents[2] / "examples" / "faust_starter" / "app.py"
TASKS = 60


@pytest.fixture
def settings(pg_url: str, topic_prefix: str, kafka_bootstrap: str) -> Settings:
    """The Kafka engine only: faust speaks Kafka; no Redis, reads go to PostgreSQL."""
    return settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka_bootstrap)


class Worker:
    """The starter app as ``python app.py worker``, its output kept in a file for the assertions."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.output_path = workdir / f"{name}.log"
        self.output = self.output_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, str(STARTER), "worker", "-l", "info"], cwd=workdir,
                                     env={**os.environ, **env}, stdout=self.output, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.output_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.output.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.output.close()


def worker_env(settings: Settings, url: str, workdir: Path) -> dict[str, str]:
    assert settings.kafka_bootstrap_servers is not None
    return {
        "BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "BLACKBOARD_TOPIC_PREFIX": settings.topic_prefix,
        "BLACKBOARD_URL": url,
        # A consumer group of this run's own.
        "STARTER_APP_ID": f"faust-test-{uuid.uuid4().hex[:8]}",
        "STARTER_TASK_COST": "1.00",
        "FAUST_BROKER_SESSION_TIMEOUT": "6",
        "FAUST_BROKER_REBALANCE_TIMEOUT": "3",
        "FAUST_BROKER_HEARTBEAT_INTERVAL": "0.5",
        # Longer than the first run lives: everything it processed is delivered again after the kill.
        "FAUST_BROKER_COMMIT_INTERVAL": "120",
        "FAUST_APP_WEB_ENABLED": "false",
        "FAUST_APP_DATADIR": str(workdir / "faust-data"),
    }


async def spent(client: httpx.AsyncClient) -> Decimal:
    response = await client.get("/v1/projects/p-1")
    assert response.status_code == 200, response.text
    return Decimal(response.json()["budget"]["spent"])


async def wait_for_spent(client: httpx.AsyncClient, at_least: Decimal, worker: Worker, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await spent(client) < at_least:
        assert worker.proc.poll() is None, worker.text()[-4000:]
        assert time.monotonic() < deadline, f"spent {await spent(client)} < {at_least}:\n{worker.text()[-4000:]}"
        await asyncio.sleep(0.1)


async def create_tasks(client: httpx.AsyncClient, numbers: range, pause: float) -> None:
    for i in numbers:
        body = {"type": "task.create", "stream": f"task:t-{i}", "command_id": f"create-t-{i}",
                "payload": {"name": f"render {i}", "payload": {"project": "p-1"}}}
        response = await client.post("/v1/commands", json=body)
        assert response.status_code == 200, response.text
        await asyncio.sleep(pause)


@pytest.mark.timeout(120)
async def test_a_killed_faust_worker_charges_each_task_once(settings: Settings, tmp_path: Path) -> None:
    async with serving(settings) as (client, runtime, _):
        created = await client.post("/v1/commands", json={
            "type": "project.create", "stream": "project:p-1",
            "payload": {"title": "faust", "currency": "EUR", "budget_total": "1000.00"}})
        assert created.status_code == 200, created.text
        env = worker_env(settings, str(client.base_url).rstrip("/"), tmp_path)
        await create_tasks(client, range(TASKS // 3), pause=0)

        first = Worker(env, tmp_path, "first")
        try:
            producing = asyncio.create_task(create_tasks(client, range(TASKS // 3, TASKS), pause=0.05))
            await wait_for_spent(client, Decimal(TASKS // 2), first, timeout=45)
            first.kill9()  # mid-stream: tasks are still being created
            await producing
        finally:
            first.stop()

        second = Worker(env, tmp_path, "second")
        try:
            await wait_for_spent(client, Decimal(TASKS), second, timeout=45)
            # The first run may have charged every task before it was killed (a slow start, the tasks all made):
            # then the budget is complete before the second has read anything, and its replays show that nothing
            # the first charged was committed. So they are waited for, not only the budget.
            deadline = time.monotonic() + 30
            while (replays := len(re.findall(r"charged \S+ for \S+ again", second.text()))) < TASKS // 2 \
                    and time.monotonic() < deadline:
                assert second.proc.poll() is None, second.text()[-4000:]
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # a duplicated charge, were there one, would land now
            assert await spent(client) == Decimal(TASKS)
        finally:
            second.stop()

        assert runtime.log is not None
        events = await read_events(runtime.log, settings.events_topic)
    created_ids = {e.envelope.event_id for e in events if e.envelope.type == "task.created"}
    costs = [e.envelope for e in events if e.envelope.type == "project.cost_added"]
    assert len(created_ids) == TASKS and len(costs) == TASKS
    assert {c.command_id for c in costs} == {f"faust:{event_id}" for event_id in created_ids}
    assert {c.causation_id for c in costs} == created_ids
    # Nothing was committed by the first run: the second reprocessed what it had charged, harmlessly.
    assert replays >= TASKS // 2, second.text()[-4000:]
