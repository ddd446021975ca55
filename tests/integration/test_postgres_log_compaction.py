"""The PostgreSQL log compacts its compacted topics as a Kafka broker does: the partition owners' snapshots
keep only the newest chunk set per key once the older ones pass the compaction lag, and a restore reads the
newest snapshot as before."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from blackboard.command_api.memory import PartitionMemory
from blackboard.command_api.restore import load_snapshot
from blackboard.command_api.snapshots import SNAPSHOT_TOPIC_CONFIG, take_snapshot, write_snapshot
from blackboard.events.log import Record
from blackboard.events.postgres import PostgresLog
from blackboard.schemas.project import CostAdded, ProjectCreated
from tests.factories import Partition

HOUR_MS = 3_600_000


@pytest.fixture
async def pg_log(pg_url: str) -> AsyncIterator[PostgresLog]:
    log = PostgresLog(pg_url, schema=f"log_{uuid.uuid4().hex[:10]}")
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def memory_after(costs: int) -> PartitionMemory:
    """An owner's memory of partition 0 after a project and ``costs`` costs (a snapshot of a few chunks)."""
    part = Partition("events", 0)
    part.event(ProjectCreated("p", "EUR", Decimal(10**9), {}), stream="project:p", version=1)
    for v in range(costs):
        part.event(CostAdded(Decimal(1), f"render {v} " + "x" * 40), stream="project:p", version=v + 2)
    memory = PartitionMemory(0)
    for rec in part.records:
        memory.fold_event(rec)
    return memory


async def count(log: PostgresLog, topic: str) -> int:
    return int(await log.pool.fetchval("SELECT count(*) FROM records WHERE topic = $1", topic))


async def test_snapshots_keep_only_the_newest_set_once_past_the_lag(pg_log: PostgresLog) -> None:
    await pg_log.create_topic("snapshots", 1, config=SNAPSHOT_TOPIC_CONFIG)
    await pg_log.create_topic("events", 1, config={"cleanup.policy": "delete", "retention.ms": "-1"})
    infos = [await write_snapshot(pg_log, "snapshots", take_snapshot(memory_after(40 * (i + 1))),
                                  max_record_bytes=1024) for i in range(3)]
    await pg_log.append("events", 0, [Record(key=b"same", value=b"v")] * 3)
    chunks = [i.chunks for i in infos]
    assert chunks[0] < chunks[1] < chunks[2] and await count(pg_log, "snapshots") == sum(chunks)
    bytes_before = (await pg_log.describe_topic("snapshots")).partition_bytes
    end = await pg_log.end_offset("snapshots", 0)

    # Younger than min.compaction.lag.ms: every set stays, as on a broker.
    assert await pg_log.compact() == {"snapshots": 0}
    removed = await pg_log.compact(now_ms=int(time.time() * 1000) + 2 * HOUR_MS)
    # The newest set's keys (0:0 … 0:n-1) cover every older chunk's key.
    assert removed == {"snapshots": chunks[0] + chunks[1]} and await count(pg_log, "snapshots") == chunks[2]
    assert await count(pg_log, "events") == 3  # not a compacted topic
    assert await pg_log.end_offset("snapshots", 0) == end
    after = (await pg_log.describe_topic("snapshots")).partition_bytes
    assert bytes_before is not None and after is not None and after[0] < bytes_before[0]

    snapshot = await load_snapshot(pg_log, "snapshots", 0)
    assert snapshot is not None and snapshot.events_offset == infos[2].events_offset


async def test_the_command_role_compacts_in_the_background(pg_log: PostgresLog) -> None:
    await pg_log.create_topic("snapshots", 1, config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
    for value in (b"a", b"b", b"c"):
        await pg_log.append("snapshots", 0, [Record(key=b"0:0", value=value)])
    task = asyncio.create_task(pg_log.compact_forever(0.05))
    try:
        for _ in range(100):
            if await count(pg_log, "snapshots") == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    rows = await pg_log.pool.fetch('SELECT "offset", value FROM records WHERE topic = $1', "snapshots")
    assert [(r["offset"], r["value"]) for r in rows] == [(2, b"c")]
