"""``blackboard up`` projects in a child process: reads see the commands, ``/metrics`` shows the child's
projector series, and a parent killed -9 leaves no projector behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import Process
from tests.services import free_port

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _projectors(parent: int) -> list[int]:
    """The children of ``parent`` started by multiprocessing's spawn (not its resource tracker)."""
    return [p for p in _children(parent) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped) counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_the_child_projects_reports_its_metrics_and_dies_with_its_parent(pg_url: str, topic_prefix: str) -> None:
    env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix, "BLACKBOARD_PARTITIONS": "2"}
    server = Process(env, free_port())
    await server.ready()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            created = await client.post("/v1/commands", json={
                "type": "project.create", "stream": "project:pp-1",
                "payload": {"title": "t", "currency": "EUR", "budget_total": "10.00"}})
            assert created.status_code == 200, created.text
            read = await client.get("/v1/projects/pp-1", params={"consistent_with": created.json()["position"]})
            assert read.status_code == 200 and read.json()["version"] == 1
            metrics = (await client.get("/metrics")).text
        applied = [line for line in metrics.splitlines()
                   if line.startswith('blackboard_projector_events_total{result="applied"}')]
        assert applied and float(applied[0].rsplit(" ", 1)[1]) >= 1, metrics[-2000:]
        projectors = _projectors(server.proc.pid)
        assert len(projectors) == 1
    finally:
        server.kill9()
    deadline = time.monotonic() + 5
    while _alive(projectors[0]) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not _alive(projectors[0]), "the projector outlived its parent"
