"""Rebuilds of the read models: a fresh generation folded from offset 0, then an atomic swap.

The rebuild writes into a schema of its own at full speed (large batches, no Redis, no
notifications; worker processes sharing the partitions; the secondary indexes built once at the
end of the catch-up), follows the live tail until it is close behind, and then swaps in one
PostgreSQL transaction that also holds the live projection still for a moment, so the new
generation is never behind the one it replaces. Reads answer from the old schema until the
commit and from the new one after it; an interrupted rebuild leaves the live schema untouched
and its own schema marked ``abandoned`` for ``drop``.

Here the plan and the swap; the fold is ``follower``'s, the catch-up's worker processes are
``replay_workers``'s and the bulk load's index and collector settings ``bulk_load``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec
import structlog

from blackboard.events.collector import bulk_gc
from blackboard.events.log import PartitionedLog
from blackboard.projector import generations
from blackboard.projector.bulk_load import RepeatedInLog, defer_indexes, restore_indexes
from blackboard.projector.follower import PROJECTION, Follower, ends
from blackboard.projector.migrate import create_pool, migrate, quote_ident
from blackboard.projector.replay_workers import LogFactory as LogFactory  # ``replay`` takes one: named here too
from blackboard.projector.replay_workers import catch_up_in_workers, worker_partitions
from blackboard.projector.runtime import AppliedBatch, Projector

logger = structlog.get_logger(__name__)

#: The channel the live projectors notify; a rebuild joins it once it is live.
LIVE_CHANNEL = "blackboard_projection"


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
    #: How many processes folded the catch-up (1: this one alone).
    workers: int = 1


OnProgress = Callable[[Progress], None]


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
    open_log: LogFactory | None = None,
    workers: int | None = None,
    worker_setup: Callable[[], None] | None = None,
) -> ReplayReport:
    """Build a new generation of the read models from the whole log; make it live when ``swap``.

    Without ``swap`` the generation is built to the end of the log and left ``building`` (drop
    it with ``generations.drop(..., building_too=True)``) — a way to inspect a new projection
    beside the live one.

    With ``open_log``, the catch-up is shared among ``workers`` processes (by default one per
    CPU, at most one per partition, and only from ``PARALLEL_FROM`` records): partitions are
    independent, and each worker locks only its own partitions' offset rows. The tail and the
    swap are then folded here, by one process, as without workers. ``worker_setup`` (it must
    pickle) runs first in each worker, e.g. to configure logging as here; without it a worker
    logs to stderr, never to stdout.

    Note: the catch-up runs without the secondary indexes and checks ``defer_indexes`` names,
    which are built after it. Should the log repeat an ``event_id`` (which the live projector sets
    aside as a dead letter), that check fails at its end; the rebuild is then done again with
    the check in place from the start, so that the repeat is set aside exactly as live.
    """
    options: dict[str, Any] = {"base": base, "topic": topic, "batch_size": batch_size, "swap": swap,
                               "handover_seconds": handover_seconds, "on_progress": on_progress,
                               "open_log": open_log, "workers": workers, "worker_setup": worker_setup}
    try:
        return await _rebuild(log, postgres_url, defer_checks=True, **options)
    except RepeatedInLog as exc:
        logger.warning("replay.repeated_in_log", error=str(exc), then="folding again with the checks in place")
        return await _rebuild(log, postgres_url, defer_checks=False, **options)


async def _rebuild(
    log: PartitionedLog,
    postgres_url: str,
    *,
    base: str,
    topic: str,
    batch_size: int,
    swap: bool,
    handover_seconds: float,
    on_progress: OnProgress | None,
    open_log: LogFactory | None,
    workers: int | None,
    worker_setup: Callable[[], None] | None,
    defer_checks: bool,
) -> ReplayReport:
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
        parallel = AppliedBatch()
        try:
            await migrate(pool, generation.schema)
            projector = Projector(log, pool, topic=topic, projection=PROJECTION, batch_size=batch_size,
                                  notify_channel=None)
            await projector.ensure_offsets(await log.partition_count(topic))
            deferred = await defer_indexes(pool, generation.schema, checks=defer_checks)
            targets = await ends(log, topic)
            groups = worker_partitions(targets, workers if open_log is not None else 1)
            meter = _Meter(started, on_progress)
            if len(groups) > 1:
                assert open_log is not None
                meter.targets = targets
                parallel = await catch_up_in_workers(open_log, worker_setup, postgres_url, generation.schema,
                                                     topic, groups, targets, batch_size, projector, meter.report)
                targets = await ends(log, topic)
            follower = Follower(log, projector)
            await follower.start()
            meter.follower = follower
            with bulk_gc():
                await follower.until(targets, meter.report)
            meter.phase = "indexes"
            meter.report(force=True)
            indexing = time.monotonic()
            await restore_indexes(pool, deferred)
            logger.info("replay.indexes", indexes=len(deferred.statements),
                        seconds=round(time.monotonic() - indexing, 2))
            meter.phase = "catch-up"
            # Catch up, then again to wherever the log has gone meanwhile, until close behind.
            with bulk_gc():
                while True:
                    meter.targets = targets
                    await follower.until(targets, meter.report)
                    targets = await ends(log, topic)
                    behind = sum(max(0, end - follower.applied_positions().get(p, 0))
                                 for p, end in targets.items())
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
    applied = parallel + (follower.applied if follower is not None else AppliedBatch())
    records = applied.applied + applied.skipped + applied.duplicates + applied.dead_letters
    return ReplayReport(generation.number, generation.schema, previous.schema, swapped, records, applied.applied,
                        applied.dead_letters, round(seconds, 3), round(records / seconds, 1) if seconds else 0.0,
                        len(groups))


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
    """Turns positions into ``Progress`` reports, at most ten a second.

    The positions are the follower's once it folds here, or those the caller reads while worker
    processes fold.
    """

    def __init__(self, started: float, on_progress: OnProgress | None) -> None:
        self.started, self.on_progress = started, on_progress
        self.follower: Follower | None = None
        self.phase = "catch-up"
        self.targets: dict[int, int] = {}
        self._last = 0.0

    def report(self, positions: dict[int, int] | None = None, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress is None or (now - self._last < 0.1 and not force):
            return
        self._last = now
        if positions is None:
            positions = self.follower.applied_positions() if self.follower is not None else {}
        done = sum(positions.values())
        total = max(done, sum(self.targets.values()))
        rate = done / (now - self.started) if now > self.started else 0.0
        eta = (total - done) / rate if rate else None
        self.on_progress(Progress(self.phase, done, total, positions, dict(self.targets), round(rate, 1),
                                  None if eta is None else round(eta, 1)))
