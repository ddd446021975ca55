"""``blackboard lag``: how far the projection is behind the log, per partition, and when it will catch up."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import msgspec

from blackboard.events.log import PartitionedLog
from blackboard.ops.offsets import PROJECTION, end_offsets, stored_offsets
from blackboard.ops.settings import OpsSettings


class PartitionLag(msgspec.Struct, frozen=True):
    """``next_offset`` is ``None`` when the projection has no offset row for the partition yet (lag counts from 0).

    ``rate`` is how many events per second the projection advanced while sampled (``None`` when not
    sampled); ``eta_seconds`` is ``lag / rate``: 0 with no lag, ``None`` when the rate is 0 or unknown.
    """

    partition: int
    next_offset: int | None
    end_offset: int
    lag: int
    rate: float | None = None
    eta_seconds: float | None = None


class LagReport(msgspec.Struct, frozen=True):
    """``eta_seconds`` is the slowest partition's (they catch up side by side), ``None`` if one never will."""

    projection: str
    topic: str
    partitions: list[PartitionLag]
    total: int
    sample_seconds: float = 0.0
    eta_seconds: float | None = None


def eta(lag: int, rate: float | None) -> float | None:
    """Seconds to catch up ``lag`` events at ``rate`` per second: 0 with no lag, ``None`` when it never will."""
    if lag <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return lag / rate


async def lag(log: PartitionedLog, pool: asyncpg.Pool, settings: OpsSettings, *,
              sample_seconds: float = 0.0) -> LagReport:
    """Per partition of the events topic: the projection's next offset, the log's end, and the difference.

    With ``sample_seconds`` the stored offsets are read twice that far apart, giving the projection's
    rate and the time to catch up at that rate.

    Note: the estimate ignores appends that arrive meanwhile; under steady traffic it is a lower bound.
    """
    topic = settings.events_topic
    first: dict[int, int] | None = None
    started = time.monotonic()
    if sample_seconds > 0:
        first = await stored_offsets(pool, topic)
        started = time.monotonic()
        await asyncio.sleep(sample_seconds)
    ends = await end_offsets(log, topic)
    stored = await stored_offsets(pool, topic)
    elapsed = time.monotonic() - started
    rows = []
    for p, end in ends.items():
        behind = max(0, end - stored.get(p, 0))
        rate = None if first is None else max(0, stored.get(p, 0) - first.get(p, 0)) / elapsed
        rows.append(PartitionLag(p, stored.get(p), end, behind, rate, eta(behind, rate)))
    etas = [r.eta_seconds for r in rows]
    overall = None if None in etas else max((e for e in etas if e is not None), default=0.0)
    return LagReport(PROJECTION, topic, rows, sum(r.lag for r in rows), sample_seconds, overall)
