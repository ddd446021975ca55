"""Rebuilds of the read models: a fresh generation folded from offset 0, then an atomic swap.

The rebuild writes into a schema of its own at full speed (large batches, no Redis, no
notifications; worker processes sharing the partitions; the secondary indexes built once at the
end of the catch-up), follows the live tail until it is close behind, and then swaps in one
PostgreSQL transaction that also holds the live projection still for a moment, so the new
generation is never behind the one it replaces. Reads answer from the old schema until the
commit and from the new one after it; an interrupted rebuild leaves the live schema untouched
and its own schema marked ``abandoned`` for ``drop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

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
#: Below this many records to catch up, one process folds them all: starting workers would cost more.
PARALLEL_FROM = 100_000
#: How often the progress of worker processes is read from the new generation's offsets.
POLL_SECONDS = 0.25
#: ``maintenance_work_mem`` of each index build after a bulk load: the change log's indexes of 1M
#: events sort in memory, instead of in temporary files.
BUILD_MEMORY = "256MB"
#: The collector's thresholds while catching up (see ``bulk_gc``).
BULK_GC_THRESHOLDS = (200_000, 20, 1_000)

#: Opens (without starting) the log a rebuild reads; it must pickle, for the worker processes.
LogFactory = Callable[[], PartitionedLog]


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


class Follower:
    """Folds a topic into one projector from its stored offsets, reading the next batch while
    the current one is written."""

    def __init__(self, log: PartitionedLog, projector: Projector, partitions: frozenset[int] | None = None) -> None:
        self.log, self.projector, self.partitions = log, projector, partitions
        #: The stored offsets when it started.
        self.start_positions: dict[int, int] = {}
        self.applied = AppliedBatch()
        self._reader: LogReader | None = None
        self._ahead: asyncio.Task[list[Item]] | None = None

    async def start(self) -> None:
        self.start_positions = {p: o for p, o in (await self.projector.positions()).items()
                                if self.partitions is None or p in self.partitions}
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
            groups = _worker_partitions(targets, workers if open_log is not None else 1)
            meter = _Meter(started, on_progress)
            if len(groups) > 1:
                assert open_log is not None
                meter.targets = targets
                parallel = await _catch_up_in_workers(open_log, worker_setup, postgres_url, generation.schema,
                                                      topic, groups, targets, batch_size, projector, meter)
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


@contextlib.contextmanager
def bulk_gc() -> Iterator[None]:
    """Collect garbage rarely while catching up, and restore the collector's settings after.

    Note: a batch of 10,000 records makes hundreds of thousands of container objects (headers,
    envelopes, rows) that all live until the batch is written, so the default thresholds start a
    collection every 700 of them, each walking the whole batch: measured, that cost a quarter of a
    rebuild's time. What is made before the catch-up is frozen out of the collector's way.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*BULK_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


#: The secondary indexes of a schema that enforce nothing: neither unique nor behind a constraint.
_PLAIN_INDEXES = """
SELECT i.tablename, i.indexname, i.indexdef FROM pg_indexes i
JOIN pg_class c ON c.relname = i.indexname JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = i.schemaname
JOIN pg_index x ON x.indexrelid = c.oid
WHERE i.schemaname = $1 AND NOT x.indisunique AND NOT x.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)
ORDER BY i.indexname"""
_CONSTRAINT = """
SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
WHERE n.nspname = $1 AND k.conrelid = to_regclass($2) AND k.conname = $3"""
#: Unique constraints that only refuse a repeat record by record (no upsert relies on them), so a bulk
#: load may check them once at its end: (table, constraint).
DEFERRABLE_CHECKS = (("change_log", "change_log_event_id_key"),)


class RepeatedInLog(Exception):
    """A check made at the end of a bulk load failed: the log repeats what must be unique (an ``event_id``)."""


class Deferred(msgspec.Struct, frozen=True):
    """What ``defer_indexes`` set aside for a bulk load: ``statements`` to run after it, each with the
    table it builds on, and the ``tables`` whose autovacuum waits until then."""

    statements: list[tuple[str, str]]
    tables: list[str]


async def defer_indexes(pool: asyncpg.Pool, schema: str, *, checks: bool = True) -> Deferred:
    """Drop ``schema``'s plain secondary indexes (and, with ``checks``, the ``DEFERRABLE_CHECKS``) and hold
    autovacuum off its tables for a bulk load; ``restore_indexes`` undoes it all.

    Note: a rebuild writes every row once, so building each index in one sorted pass after the
    load costs less than keeping it up to date row by row (the random ``event_id`` and
    ``command_id`` keys cost the change log's COPY more than half its time). The upserts' keys
    stay, and so does every other unique constraint. Autovacuum would otherwise vacuum the
    freshly inserted change log in the middle of the load, for nothing.
    """
    statements: list[tuple[str, str]] = []
    tables: list[str] = []
    async with pool.acquire() as conn:
        for row in await conn.fetch(_PLAIN_INDEXES, schema):
            await conn.execute(f"DROP INDEX {quote_ident(schema)}.{quote_ident(row['indexname'])}")
            statements.append((f"{quote_ident(schema)}.{quote_ident(row['tablename'])}", row["indexdef"]))
        for table, name in DEFERRABLE_CHECKS if checks else ():
            qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
            definition = await conn.fetchval(_CONSTRAINT, schema, qualified, name)
            if definition is None:
                continue
            await conn.execute(f"ALTER TABLE {qualified} DROP CONSTRAINT {quote_ident(name)}")
            statements.append((qualified, f"ALTER TABLE {qualified} ADD CONSTRAINT {quote_ident(name)} {definition}"))
        for table in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema):
            tables.append(f"{quote_ident(schema)}.{quote_ident(table['tablename'])}")
            await conn.execute(f"ALTER TABLE {tables[-1]} SET (autovacuum_enabled = false)")
    return Deferred(statements, tables)


async def restore_indexes(pool: asyncpg.Pool, deferred: Deferred) -> None:
    """Build what ``defer_indexes`` dropped, the largest tables' first, as many at once as ``pool`` has
    connections; ``RepeatedInLog`` when a check fails. Then let autovacuum back in."""
    async with pool.acquire() as conn:
        sizes = {t: await conn.fetchval("SELECT pg_total_relation_size(to_regclass($1))", t)
                 for t in {table for table, _ in deferred.statements}}

    async def build(statement: str) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
            try:
                await conn.execute(statement)
            except asyncpg.UniqueViolationError as exc:
                raise RepeatedInLog(f"{exc} ({exc.detail})") from exc

    try:
        async with asyncio.TaskGroup() as group:
            for _, statement in sorted(deferred.statements, key=lambda item: -sizes[item[0]]):
                group.create_task(build(statement))
    except* RepeatedInLog as failed:
        raise failed.exceptions[0] from None
    async with pool.acquire() as conn:
        for table in deferred.tables:
            await conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")


def _worker_partitions(targets: Mapping[int, int], workers: int | None) -> list[frozenset[int]]:
    """The partitions each worker process folds: the largest backlogs spread first, so the shares come out even.

    One group (no worker processes) below ``PARALLEL_FROM`` records or when one worker is asked for.
    """
    count = workers if workers is not None else (os.cpu_count() or 1)
    count = max(1, min(count, sum(1 for end in targets.values() if end > 0)))
    if count == 1 or (workers is None and sum(targets.values()) < PARALLEL_FROM):
        return [frozenset(targets)]
    shares: list[tuple[int, set[int]]] = [(0, set()) for _ in range(count)]
    for partition, end in sorted(targets.items(), key=lambda item: -item[1]):
        load, members = min(shares, key=lambda share: share[0])
        shares.remove((load, members))
        members.add(partition)
        shares.append((load + end, members))
    return [frozenset(members) for _, members in shares if members]


async def _catch_up_in_workers(open_log: LogFactory, setup: Callable[[], None] | None, postgres_url: str,
                               schema: str, topic: str,
                               groups: list[frozenset[int]], targets: Mapping[int, int], batch_size: int,
                               projector: Projector, meter: _Meter) -> AppliedBatch:
    """Fold each group of partitions up to ``targets`` in a process of its own; report progress meanwhile.

    Note: the workers are spawned, not forked (a fork would copy this process's event loop and
    connections). Progress is read from the generation's offsets, which each worker commits with
    every batch. A failing worker stops them all; so does a cancellation (Ctrl-C), and nothing
    of the live generation is touched either way.
    """
    context = multiprocessing.get_context("spawn")
    running: list[tuple[SpawnProcess, Connection]] = []
    try:
        for group in groups:
            receive, send = context.Pipe(duplex=False)
            worker = context.Process(
                target=_worker_main, name=f"blackboard-replay-{min(group)}", daemon=True,
                args=(open_log, setup, postgres_url, schema, topic, sorted(group),
                      {p: targets[p] for p in group}, batch_size, send))
            worker.start()
            send.close()
            running.append((worker, receive))
        logger.info("replay.workers", workers=len(running), partitions=[sorted(g) for g in groups])
        outcomes: dict[int, AppliedBatch] = {}
        while len(outcomes) < len(running):
            await asyncio.sleep(POLL_SECONDS)
            meter.report(await projector.positions())
            for index, (worker, receive) in enumerate(running):
                if index in outcomes:
                    continue
                # Polled again after the exit: a worker may send its outcome and end between two looks.
                if receive.poll() or (not worker.is_alive() and receive.poll()):
                    outcome = receive.recv()
                    if not isinstance(outcome, AppliedBatch):
                        raise RuntimeError(f"replay worker {worker.name} failed: {outcome}")
                    outcomes[index] = outcome
                elif not worker.is_alive():
                    raise RuntimeError(f"replay worker {worker.name} exited with code {worker.exitcode}")
        total = AppliedBatch()
        for outcome in outcomes.values():
            total = total + outcome
        return total
    finally:
        for worker, _ in running:
            if worker.is_alive():
                worker.terminate()
        for worker, _ in running:
            await asyncio.to_thread(worker.join, 5.0)
def _worker_main(open_log: LogFactory, setup: Callable[[], None] | None, postgres_url: str, schema: str, topic: str,
                 partitions: list[int], targets: dict[int, int], batch_size: int, send: Connection) -> None:
    """A worker process: fold ``partitions`` up to ``targets``, then send what it applied (or why it failed)."""
    try:
        if setup is not None:
            setup()
        else:  # stdout is the command's output (a report, JSON): a worker's logs go to stderr
            structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        with bulk_gc():
            outcome: AppliedBatch | str = asyncio.run(
                _worker_catch_up(open_log, postgres_url, schema, topic, partitions, targets, batch_size))
    except KeyboardInterrupt:
        outcome = "interrupted"
    except BaseException as exc:  # sent to the coordinator, which raises it there
        outcome = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(OSError):
        send.send(outcome)
    send.close()


async def _worker_catch_up(open_log: LogFactory, postgres_url: str, schema: str, topic: str, partitions: list[int],
                           targets: dict[int, int], batch_size: int) -> AppliedBatch:
    log = open_log()
    await log.start()
    try:
        pool = await create_pool(postgres_url, schema, min_size=1, max_size=2)
        try:
            projector = Projector(log, pool, topic=topic, projection=PROJECTION, batch_size=batch_size,
                                  notify_channel=None)
            follower = Follower(log, projector, frozenset(partitions))
            await follower.start()
            try:
                await follower.until(targets)
            finally:
                await follower.close()
            return follower.applied
        finally:
            await pool.close()
    finally:
        await log.close()


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
