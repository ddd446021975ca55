"""Where the log ends and where the projection stands: the offsets the operator views compare."""

from __future__ import annotations

import asyncpg

from blackboard.events.log import PartitionedLog

#: The live projection's name in ``projection_offsets``.
PROJECTION = "main"


async def end_offsets(log: PartitionedLog, topic: str) -> dict[int, int]:
    """The exact end offset of every partition of ``topic``; ``UnknownTopic`` when it does not exist."""
    partitions = await log.partition_count(topic)
    return {p: await log.end_offset(topic, p) for p in range(partitions)}


async def stored_offsets(pool: asyncpg.Pool, topic: str, projection: str = PROJECTION) -> dict[int, int]:
    """The projection's stored next offset per partition; empty when its schema was never migrated."""
    try:
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2",
            projection, topic)
    except asyncpg.UndefinedTableError:
        return {}
    return {r["partition"]: r["next_offset"] for r in rows}
