"""Rebuilds of the read models: a fresh generation folded from offset 0, then an atomic swap.

The rebuild writes into a schema of its own at full speed (large batches, no Redis, no
notifications), follows the live tail until it is close behind, and then swaps in one
PostgreSQL transaction that also holds the live projection still for a moment, so the new
generation is never behind the one it replaces. Reads answer from the old schema until the
commit and from the new one after it; an interrupted rebuild leaves the live schema untouched
and its own schema marked ``abandoned`` for ``drop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

import asyncpg
import msgspec
import structlog

from blackboard.events.log import LogReader, PartitionedLog
from blackboard.projector import generations
from blackboard.projector.fold import Item
from blackboard.projector.migrate import create_pool, migrate, quote_ident
from blackboard.projector.runtime import AppliedBatch, Projector

logger = structlog.get_logger(__name__)

PROJECTION = "main"
#: The channel the live projectors notify; a rebuild joins it once it is live.
LIVE_CHANNEL = "blackboard_projection"
READ_TIMEOUT = 0.5


class Progress(msgspec.Struct, frozen=True):
    """Where a rebuild is: ``phase`` is ``catch-up``, ``swap`` or ``handover``.

    ``positions`` and ``targets`` are per partition; ``done``/``total`` count records from 0.
    """

    phase: str
    done: int
    total: int
    positions: dict[int, int]
    targets: dict[int, int]
    events_per_second: float
    eta_seconds: float | None


class ReplayReport(msgspec.Struct, frozen=True):
    """What a rebuild did; ``previous`` is the schema that was live before (now retired, when swapped)."""

    generation: int
    schema: str
    previous: str
    swapped: bool
    records: int
    applied: int
    dead_letters: int
    seconds: float
    events_per_second: float


OnProgress = Callable[[Progress], None]


class Follower:
    """Folds a topic into one projector from its stored offsets, reading the next batch while
    the current one is written."""

    def __init__(self, log: PartitionedLog, projector: Projector) -> None:
        self.log, self.projector = log, projector
        #: The stored offsets when it started.
        self.start_positions: dict[int, int] = {}
        self.applied = AppliedBatch()
        self._reader: LogReader | None = None
        self._ahead: asyncio.Task[list[Item]] | None = None

    async def start(self) -> None:
        self.start_positions = await self.projector.positions()
        self._reader = self.log.reader(self.projector.topic)
        for partition, offset in sorted(self.start_positions.items()):
            await self._reader.seek(partition, offset)

    async def _read(self) -> list[Item]:
        assert self._reader is not None
        records = await self._reader.read(max_records=self.projector.batch_size, timeout=READ_TIMEOUT)
        return self.projector.prepare(records)

    async def step(self) -> int:
        """Read (ahead) and apply one batch; return how many records it held."""
        if self._ahead is None:
            self._ahead = asyncio.create_task(self._read())
        items = await self._ahead
        self._ahead = asyncio.create_task(self._read())
        if items:
            self.applied = self.applied + await self.projector.apply_items(items)
        return len(items)

    def applied_positions(self) -> dict[int, int]:
        """The positions of what was applied (the batch read ahead excluded)."""
        return {**self.start_positions, **self.applied.positions}

    async def until(self, targets: Mapping[int, int], on_step: Callable[[], None] | None = None) -> None:
        """Apply batches until every partition's applied position has reached its target."""
        while True:
            reached = self.applied_positions()
            if all(reached.get(p, 0) >= end for p, end in targets.items()):
                return
            await self.step()
            if on_step is not None:
                on_step()

    async def for_seconds(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.step()

    async def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            await asyncio.gather(self._ahead, return_exceptions=True)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader.close()


async def ends(log: PartitionedLog, topic: str) -> dict[int, int]:
    return {p: await log.end_offset(topic, p) for p in range(await log.partition_count(topic))}


async def replay(
    log: PartitionedLog,
    postgres_url: str,
    *,
    base: str,
    topic: str,
    batch_size: int = 10_000,
    swap: bool = True,
    handover_seconds: float = 3.0,
    on_progress: OnProgress | None = None,
) -> ReplayReport:
    """Build a new generation of the read models from the whole log; make it live when ``swap``.

    Without ``swap`` the generation is built to the end of the log and left ``building`` (drop
    it with ``generations.drop(..., building_too=True)``) — a way to inspect a new projection
    beside the live one.
    """
    started = time.monotonic()
    control = await asyncpg.connect(postgres_url)
    try:
        if not await control.fetchval("SELECT pg_try_advisory_lock(hashtext('blackboard.replay:' || $1))", base):
            raise generations.GenerationError(f"a rebuild of {base!r} is already running")
        previous = await generations.live(control, base)
        generation = await generations.begin(control, base)
        logger.info("replay.started", generation=generation.number, schema=generation.schema)
        swapped = False
        pool = await create_pool(postgres_url, generation.schema, min_size=1, max_size=2)
        follower: Follower | None = None
        try:
            await migrate(pool, generation.schema)
            projector = Projector(log, pool, topic=topic, projection=PROJECTION, batch_size=batch_size,
                                  notify_channel=None)
            await projector.ensure_offsets(await log.partition_count(topic))
            follower = Follower(log, projector)
            await follower.start()
            meter = _Meter(follower, started, on_progress)
            targets = await ends(log, topic)
            # Catch up, then again to wherever the log has gone meanwhile, until close behind.
            while True:
                meter.targets = targets
                await follower.until(targets, meter.report)
                targets = await ends(log, topic)
                behind = sum(max(0, end - follower.applied_positions().get(p, 0)) for p, end in targets.items())
                if behind <= batch_size:
                    break
            if swap:
                async with control.transaction():
                    live_offsets = await _hold_live(control, previous.schema, topic)
                    meter.phase, meter.targets = "swap", {**targets, **live_offsets}
                    await follower.until(live_offsets, meter.report)
                    await generations.swap(control, base, generation.number)
                swapped = True
                logger.info("replay.swapped", generation=generation.number, previous=previous.schema)
                # Keep the new generation moving while the running processes move to it.
                projector.notify_channel = LIVE_CHANNEL
                meter.phase = "handover"
                await follower.for_seconds(handover_seconds)
        except BaseException:
            if not swapped:
                with contextlib.suppress(Exception):
                    await asyncio.shield(generations.abandon(control, base, generation.number))
            raise
        finally:
            if follower is not None:
                await follower.close()
            await pool.close()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(control.close(), 5.0)
    seconds = time.monotonic() - started
    applied = follower.applied if follower is not None else AppliedBatch()
    records = applied.applied + applied.skipped + applied.duplicates + applied.dead_letters
    return ReplayReport(generation.number, generation.schema, previous.schema, swapped, records, applied.applied,
                        applied.dead_letters, round(seconds, 3), round(records / seconds, 1) if seconds else 0.0)


async def _hold_live(conn: asyncpg.Connection, schema: str, topic: str) -> dict[int, int]:
    """The live projection's offsets, locked until the caller's transaction ends.

    Note: the live projector locks the same rows for each batch, so it waits until the swap has
    committed; the new generation is brought up to these offsets before it becomes live.
    """
    table = f"{quote_ident(schema)}.projection_offsets"
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return {}  # the live generation was never started: nothing to hold
    rows = await conn.fetch(f"SELECT partition, next_offset FROM {table} "
                            "WHERE projection = $1 AND topic = $2 ORDER BY partition FOR UPDATE", PROJECTION, topic)
    return {r["partition"]: r["next_offset"] for r in rows}


class _Meter:
    """Turns the follower's positions into ``Progress`` reports, at most ten a second."""

    def __init__(self, follower: Follower, started: float, on_progress: OnProgress | None) -> None:
        self.follower, self.started, self.on_progress = follower, started, on_progress
        self.phase = "catch-up"
        self.targets: dict[int, int] = {}
        self._last = 0.0

    def report(self) -> None:
        now = time.monotonic()
        if self.on_progress is None or now - self._last < 0.1:
            return
        self._last = now
        positions = self.follower.applied_positions()
        done = sum(positions.values())
        total = max(done, sum(self.targets.values()))
        rate = done / (now - self.started) if now > self.started else 0.0
        eta = (total - done) / rate if rate else None
        self.on_progress(Progress(self.phase, done, total, positions, dict(self.targets), round(rate, 1),
                                  None if eta is None else round(eta, 1)))
