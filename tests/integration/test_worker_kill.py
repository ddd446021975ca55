"""kill -9 of a worker process holding claimed tasks: its node goes offline, its tasks go back to pending and
are done by other workers, and nothing is done twice under the same fencing token."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import httpx
import msgspec
import pytest
from blackboard_client.worker import ClaimedTask, Worker

from blackboard.config import Settings
from tests.integration.harness import command, read_events, serving

pytestmark = pytest.mark.slow


def start_worker(url: str, node: str) -> subprocess.Popen[bytes]:
    """``blackboard worker`` in a process of its own: three tasks at a time, a TTL of 2 seconds."""
    return subprocess.Popen(
        [sys.executable, "-m", "blackboard.cli", "worker", "--url", url, "--node", node, "--capacity", "3",
         "--ttl-seconds", "2"], env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def held_by(client: httpx.AsyncClient, node: str) -> list[str]:
    page = (await client.get("/v1/tasks", params={"node": node})).json()
    return [t["id"] for t in page["items"] if t["status"] in ("claimed", "running")]


async def test_kill_minus_nine_of_a_worker_returns_its_tasks_to_other_workers(settings: Settings) -> None:
    async with serving(settings) as (client, runtime, url):
        for i in range(3):
            made = await command(client, "task.create", f"task:long-{i}",
                                 {"name": "long", "payload": {"seconds": 600}, "lease_seconds": 600})
            assert made.status_code == 200
        victim = start_worker(url, "victim")
        try:
            deadline = time.monotonic() + 60
            while len(await held_by(client, "victim")) < 3:
                assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else ""
                assert time.monotonic() < deadline, "the worker process never held the three tasks"
                await asyncio.sleep(0.1)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            if victim.stderr:
                victim.stderr.close()

        async def quick(task: ClaimedTask, worker: Worker) -> dict[str, Any]:
            return {"by": worker.node_id}

        rescuers = [Worker(url, f"rescuer-{i}", quick, client=client, idle_seconds=0.1) for i in range(2)]
        stop = asyncio.Event()
        runs = [asyncio.create_task(w.run(stop=stop)) for w in rescuers]
        try:
            deadline = time.monotonic() + 60
            while sum(len(w.completed) for w in rescuers) < 3:
                assert time.monotonic() < deadline, "the released tasks were not done by the others"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await asyncio.gather(*runs)
        node = (await client.get("/v1/nodes/victim")).json()
        assert node["status"] == "offline"
        assert runtime.log is not None
        events = await read_events(runtime.log, runtime.settings.events_topic)
    done: Counter[tuple[str, int]] = Counter()
    for e in events:
        if e.envelope.type == "task.succeeded":
            done[(e.envelope.stream, msgspec.json.decode(e.envelope.payload)["token"])] += 1
    assert sorted(done) == [(f"task:long-{i}", 2) for i in range(3)], "each done once, under the second token"
    assert set(done.values()) == {1}
    released = [msgspec.json.decode(e.envelope.payload) for e in events if e.envelope.type == "task.attempt_failed"]
    assert [(r["reason"], r["token"]) for r in released] == [("node_offline", 1)] * 3
