"""Compaction of the PostgreSQL log's compacted topics, as a Kafka broker's log cleaner does it.

A topic created with ``cleanup.policy`` ``compact`` (the partition owners' snapshots) keeps, per
partition and key, only the newest record; an older record of a key goes once it is older than the
topic's ``min.compaction.lag.ms`` (0 when not given), so the previous snapshot stays readable for a
while after a torn write of the next. Records without a key are kept (Kafka refuses them on such a
topic), and so is the newest record of every key. Offsets never move: a compacted partition has
holes, which every reader passes over, and its end offset stays where it was.

Note: the newest record of a partition is the newest of its key, so it is never removed: a reader
that reads up to the end offset always finds a record there.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)

_COMPACTED = "SELECT topic, config::text AS config FROM topics WHERE config->>'cleanup.policy' LIKE '%compact%'"

# One pass over the topic's rows in key order within each partition: every record that has a newer
# one of its key and is older than the lag goes. Ranked by offset, not time: the log's order decides.
_COMPACT = """
DELETE FROM records AS r
USING (
    SELECT partition, "offset" FROM (
        SELECT partition, "offset", timestamp_ms,
               row_number() OVER (PARTITION BY partition, key ORDER BY "offset" DESC) AS rank
        FROM records WHERE topic = $1 AND key IS NOT NULL
    ) AS ranked
    WHERE rank > 1 AND timestamp_ms < $2
) AS superseded
WHERE r.topic = $1 AND r.partition = superseded.partition AND r."offset" = superseded."offset"
"""


def lag_ms(config: dict[str, Any]) -> int:
    """The topic's ``min.compaction.lag.ms`` (0 when missing or not a whole number of 0 or more)."""
    try:
        return max(0, int(config.get("min.compaction.lag.ms", 0)))
    except (TypeError, ValueError):
        return 0


async def compact(pool: asyncpg.Pool, *, now_ms: int | None = None) -> dict[str, int]:
    """Compact every compacted topic of the log once; how many records each lost."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    removed: dict[str, int] = {}
    for row in await pool.fetch(_COMPACTED):
        status = await pool.execute(_COMPACT, row["topic"], now - lag_ms(json.loads(row["config"])))
        removed[row["topic"]] = int(status.split()[-1])
    return removed


async def run(pool: asyncpg.Pool, every: float) -> None:
    """Compact every ``every`` seconds until cancelled; a failed pass is logged and tried again next time."""
    while True:
        await asyncio.sleep(every)
        try:
            removed = await compact(pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("log.compaction_failed", error=repr(exc))
            continue
        if any(removed.values()):
            log.info("log.compacted", removed=removed)
