"""A rebuild shared among worker processes, and the checks it defers to the end of its bulk load."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import asyncpg

from blackboard.config import Settings
from blackboard.connect import log_factory, read_pool
from blackboard.ops.verify import verify
from blackboard.projector import generations
from blackboard.projector.replay import replay
from blackboard.schemas.envelope import stream_partition_key
from blackboard.schemas.project import CostAdded
from tests.factories import envelope
from tests.integration.harness import command, running, settings_for
from tests.integration.test_replay import add_cost, create_project, letters, produce, started_log


async def test_worker_processes_share_a_rebuild_under_load_and_it_verifies_equal(settings: Settings) -> None:
    assert settings.postgres_url is not None
    url = settings.postgres_url.get_secret_value()
    projects = [f"p-{i}" for i in range(8)]
    async with running(settings) as (client, _):
        for pid in projects:
            await create_project(client, pid)
        for i in range(8):
            r = await command(client, "task.create", f"task:t-{i}", {"name": f"t-{i}", "priority": i % 3})
            assert r.status_code == 200, r.text
        for i in range(160):
            assert (await add_cost(client, projects[i % len(projects)])).status_code == 200
        stop = asyncio.Event()

        async def write() -> None:  # the tail the rebuild follows after its workers are done
            i = 0
            while not stop.is_set():
                assert (await add_cost(client, projects[i % len(projects)])).status_code == 200
                i += 1

        writer = asyncio.create_task(write())
        try:
            async with started_log(settings) as log:
                report = await replay(log, url, base=settings.read_schema, topic=settings.events_topic,
                                      batch_size=10, handover_seconds=0.5, workers=2,
                                      open_log=log_factory(settings, url))
        finally:
            stop.set()
            await writer
        assert report.swapped and report.workers == 2 and report.dead_letters == 0
        assert report.records >= 8 + 8 + 160
        async with started_log(settings) as log, read_pool(settings, url) as pool:
            verified = await verify(log, pool, url, settings, timeout=60)
        assert verified.equal, verified


async def test_a_repeated_event_id_is_set_aside_by_a_rebuild_exactly_as_live(pg_url: str, topic_prefix: str) -> None:
    """The bulk load checks event_id uniqueness at its end; the repeat makes it fold again with the check on."""
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings, roles=frozenset({"command", "projector"})) as (client, runtime):
        for pid in ("p-1", "p-2", "p-3"):
            await create_project(client, pid)
        for _ in range(12):  # the repeat below comes well after p-1's first event in any partition
            assert (await add_cost(client, "p-3")).status_code == 200
        conn = await asyncpg.connect(pg_url)
        try:
            taken = await conn.fetchval(f"SELECT event_id FROM {settings.read_schema}.change_log "
                                        "WHERE stream = 'project:p-1'")
        finally:
            await conn.close()
        # Another stream's event under an event_id the log already holds: live, it is a dead letter.
        async with started_log(settings) as log:
            repeat = envelope(CostAdded(Decimal(5), "render"), stream="project:p-3", version=14, event_id=taken,
                              partition_key=stream_partition_key("project:p-3"))
            await produce(log, settings.events_topic, runtime.partitions, repeat)
        for _ in range(100):
            if await letters(settings, pg_url):
                break
            await asyncio.sleep(0.05)
        [letter] = await letters(settings, pg_url)
        assert "event_id" in letter.reason and letter.stream == "project:p-3"

        async with started_log(settings) as log:
            # Small batches: the event it repeats is folded in an earlier batch, so only the check can tell.
            report = await replay(log, pg_url, base=settings.read_schema, topic=settings.events_topic,
                                  batch_size=4, handover_seconds=0.0)
        assert report.swapped and report.dead_letters == 1
        # The first attempt (checks deferred) was abandoned when its check failed at the end.
        conn = await asyncpg.connect(pg_url)
        try:
            states = {g.number: g.state for g in await generations.listing(conn, settings.read_schema)}
        finally:
            await conn.close()
        assert states == {0: "retired", 1: "abandoned", 2: "live"}
        [rebuilt] = await letters(settings, pg_url)
        assert (rebuilt.partition, rebuilt.offset, rebuilt.stream) == (letter.partition, letter.offset, letter.stream)
        async with started_log(settings) as log, read_pool(settings, pg_url) as pool:
            verified = await verify(log, pool, pg_url, settings, timeout=60)
        assert verified.equal, verified


async def test_the_replay_command_shares_the_catch_up_and_keeps_stdout_for_its_report(
        pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings, roles=frozenset({"command", "projector"})) as (client, _):
        for pid in ("p-1", "p-2", "p-3", "p-4"):
            await create_project(client, pid)
            for _ in range(5):
                assert (await add_cost(client, pid)).status_code == 200
    env = {**os.environ, "BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix,
           "BLACKBOARD_PARTITIONS": "4"}
    blackboard = Path(sys.executable).with_name("blackboard")
    done = await asyncio.to_thread(
        subprocess.run, [str(blackboard), "replay", "--workers", "2", "--handover-seconds", "0", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)  # the workers' logs went elsewhere
    assert report["swapped"] and report["workers"] == 2 and report["applied"] >= 4 * 6, report
