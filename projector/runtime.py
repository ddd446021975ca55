"""The projection runtime: batches of log records folded into the read models, exactly once in effect.

One PostgreSQL transaction per batch writes the read-model rows, the change log, the dead
letters and the projection offsets together, so a crash anywhere replays into the same
result. A batch is folded set-based: the touched rows are loaded with one query per table,
changed in memory in log order (``fold``) and written back with one statement per table
(``rows``); a batch a record of which PostgreSQL refuses is applied by halves (``poison``).
After commit the changed documents go to Redis in one version-guarded script call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import asyncpg
import msgspec
import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind

from blackboard.events.log import LogReader, PartitionedLog, StoredRecord
from blackboard.events.tracing import distinct, event_span_context
from blackboard.projector import metrics, poison, rows, skips
from blackboard.projector.cache import CachedDoc, CacheUnavailable, DocumentCache
from blackboard.projector.dead_letters import Resolution
from blackboard.projector.fold import Decoded, Item, decode

logger = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

READ_TIMEOUT = 1.0
LAG_EVERY_SECONDS = 5.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 30.0
#: Shortest time between the starts of two batches of the live projector, caught up (seconds): under a steady
#: load, a batch's fixed cost (a dozen round trips to PostgreSQL and Redis) is shared by more events.
BATCH_INTERVAL = 0.01
#: Most links a batch span carries (the SDK's default limit): one per command whose events it folds.
MAX_LINKS = 128


class AppliedBatch(msgspec.Struct, frozen=True):
    """What one ``Projector.apply`` did with its records.

    ``skipped`` were below the stored offset (applied by an earlier batch); ``duplicates`` were
    events already in the change log with the same ``event_id``; ``positions`` is the stored
    next offset of every partition the batch advanced.
    """

    applied: int = 0
    skipped: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    positions: dict[int, int] = {}

    def __add__(self, other: AppliedBatch) -> AppliedBatch:
        return AppliedBatch(
            self.applied + other.applied, self.skipped + other.skipped, self.duplicates + other.duplicates,
            self.dead_letters + other.dead_letters, {**self.positions, **other.positions},
        )


# ── the runtime ─────────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class _Outcome:
    batch: AppliedBatch
    docs: list[CachedDoc]

    def __add__(self, other: _Outcome) -> _Outcome:
        return _Outcome(self.batch + other.batch, self.docs + other.docs)


class Projector:
    """Folds the events topic into the read models of ``pool``'s schema (a pool from ``create_pool``).

    Note: every record below a partition's stored ``next_offset`` is skipped, and the offsets
    rows are locked for the batch, so two projectors of one projection never apply a record twice.
    """

    def __init__(
        self,
        log: PartitionedLog,
        pool: asyncpg.Pool,
        *,
        topic: str,
        projection: str = "main",
        cache: DocumentCache | None = None,
        batch_size: int = 2000,
        notify_channel: str | None = "blackboard_projection",
        batch_interval: float = BATCH_INTERVAL,
    ) -> None:
        self.log, self.pool, self.topic, self.projection = log, pool, topic, projection
        self.batch_interval = batch_interval
        self.cache, self.batch_size, self.notify_channel = cache, batch_size, notify_channel
        self.failures = 0
        # (kind, id) of documents whose write-through failed: deleted once Redis answers again.
        self._dirty: set[tuple[str, str]] = set()
        self._lag_at = 0.0

    # ── the loop ──

    async def run(self) -> None:
        """Apply the topic's records as they come, until cancelled.

        On any failure (PostgreSQL or the log away) it backs off, exponentially up to
        ``BACKOFF_MAX`` seconds, and starts again from the stored offsets: it never skips.
        """
        while True:
            try:
                await self._follow()
            except Exception as exc:  # never crash-loop: the stored offsets make a restart safe
                self.failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self.failures - 1, 16))
                logger.warning("projector.retry", error=repr(exc), failures=self.failures, delay=delay)
                await asyncio.sleep(delay)

    async def _follow(self) -> None:
        """Read and apply batches on one connection of the pool, held for as long as it follows.

        Note: behind the log (a batch filled a partition's share of ``batch_size``), the next batch is read
        and decoded while this one's transaction runs. Caught up, the next read starts only once the batch
        is applied, so it takes every record appended meanwhile: a read started at once returned with the
        first append's few records, and each batch's fixed round trips were paid for a handful of events.
        For the same reason a batch starts at most every ``batch_interval`` seconds: a steady load's events
        wait up to that long (well within the freshness target), a lone command's are read at once.
        """
        partitions = await self.log.partition_count(self.topic)
        await self.ensure_offsets(partitions)
        share = max(1, self.batch_size // partitions)
        reader = self.log.reader(self.topic)
        ahead: asyncio.Task[list[Item]] | None = None
        try:
            for partition, offset in sorted((await self.positions()).items()):
                await reader.seek(partition, offset)
            loop = asyncio.get_running_loop()
            started = -self.batch_interval
            async with self.pool.acquire() as conn:
                while True:
                    if ahead is None and (wait := started + self.batch_interval - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    items = await ahead if ahead is not None else await self._read(reader)
                    started = loop.time()
                    ahead = asyncio.create_task(self._read(reader)) if _behind(items, share) else None
                    await self._apply_items(items, conn)
                    if not items:
                        await self._idle()
                    self.failures = 0
        finally:
            await _stop_reading(reader, ahead)

    async def _idle(self) -> None:
        """Work for a quiet moment: flush stale cache keys, and publish the lag (every few seconds)."""
        if self._dirty:
            await self._write_through([])
        now = time.monotonic()
        if now - self._lag_at >= LAG_EVERY_SECONDS:
            self._lag_at = now
            for partition, position in (await self.positions()).items():
                end = await self.log.end_offset(self.topic, partition)
                metrics.LAG.labels(str(partition)).set(max(0, end - position))

    async def _read(self, reader: LogReader) -> list[Item]:
        return self._prepare(await reader.read(max_records=self.batch_size, timeout=READ_TIMEOUT))

    async def ensure_offsets(self, partitions: int) -> None:
        """Give every partition ``0..partitions-1`` an offset row (starting at 0) if it has none."""
        await rows.ensure_offsets(self.pool, self.projection, self.topic, range(partitions))

    async def positions(self) -> dict[int, int]:
        """The stored next offset of every partition of the topic."""
        return await rows.positions(self.pool, self.projection, self.topic)

    # ── one batch ──

    async def apply(self, records: Sequence[StoredRecord]) -> AppliedBatch:
        """Fold ``records`` of this topic in one transaction, each partition's in offset order.

        After commit, the documents of every changed project and task go to the cache.
        """
        return await self._apply_items(self._prepare(records))

    def prepare(self, records: Sequence[StoredRecord]) -> list[Item]:
        """``records`` decoded for ``apply_items``: the CPU half of ``apply``, to overlap with a write."""
        return self._prepare(records)

    async def apply_items(self, items: list[Item]) -> AppliedBatch:
        """The I/O half of ``apply``: fold prepared items in one transaction, then the cache."""
        return await self._apply_items(items)

    async def resolve(self, letter_id: int, *, skip: bool = False) -> Resolution:
        """Retry (after a fix) or skip the dead letter ``letter_id``, then release what its stream held.

        The records are read again from the log and folded by today's code, in log order, in one
        transaction: the letter first (or, skipping, its stream only takes its version), then every
        letter held behind it, until one fails again; those after it stay held.

        Note: the transaction locks the partition's offset row, as every batch does, so the live
        projector cannot hold a new event of the stream behind a letter this call is releasing.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            outcome, docs = await poison.resolve(conn, self.log, projection=self.projection, topic=self.topic,
                                                 letter_id=letter_id, skip=skip, notify_channel=self.notify_channel,
                                                 caching=self.cache is not None)
        await self._write_through(docs)
        logger.info("projector.dead_letter_resolved", letter=letter_id, skip=skip, applied=len(outcome.applied),
                    open=len(outcome.open), held=len(outcome.held))
        return outcome

    def _prepare(self, records: Sequence[StoredRecord]) -> list[Item]:
        """``records`` decoded, each partition's in offset order, each offset once."""
        strangers = {r.topic for r in records} - {self.topic}
        if strangers:
            raise ValueError(f"records of topics {sorted(strangers)} given to the projector of {self.topic!r}")
        # A record delivered twice (a reader re-seeked under a batch) is still one record.
        unique = {(r.partition, r.offset): r for r in records}
        return [decode(unique[k]) for k in sorted(unique)]

    async def _apply_items(self, items: list[Item], conn: asyncpg.Connection | None = None) -> AppliedBatch:
        if not items:
            return AppliedBatch()
        with self._batch_span(items):
            if conn is not None:
                return await self._apply_batch(conn, items)
            async with self.pool.acquire() as acquired:
                return await self._apply_batch(acquired, items)

    def _batch_span(self, items: Sequence[Item]) -> AbstractContextManager[Span]:
        """A new root span for one batch, linked to the span that decided each of its commands.

        Note: a batch folds the events of many commands, each in its own trace; links (not a
        parent) tie it to all of them. Past ``MAX_LINKS`` commands the rest go unlinked.
        """
        contexts = distinct(event_span_context(i.env) for i in items if isinstance(i, Decoded))
        return tracer.start_as_current_span(
            f"project {self.topic}", context=Context(), kind=SpanKind.CONSUMER,
            links=[Link(c) for c in contexts[:MAX_LINKS]],
            attributes={"messaging.destination.name": self.topic, "messaging.batch.message_count": len(items),
                        "blackboard.projection": self.projection, "blackboard.traces": len(contexts)},
        )

    async def _apply_batch(self, conn: asyncpg.Connection, items: list[Item]) -> AppliedBatch:
        started = time.perf_counter()
        try:
            async with conn.transaction():
                outcome = await self._apply_tx(conn, items)
        except poison.DATA_ERRORS as exc:  # a record's data failed a statement: the batch by halves instead
            async with conn.transaction():
                outcome = await poison.bisect(conn, items, exc, self._apply_tx)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(items))
        batch = outcome.batch
        for result, count in (("applied", batch.applied), ("skipped", batch.skipped),
                              ("duplicate", batch.duplicates), ("dead_letter", batch.dead_letters)):
            if count:
                metrics.APPLIED.labels(result).inc(count)
        if self.cache is not None:
            documents = {"blackboard.documents": len(outcome.docs)}
            with tracer.start_as_current_span("cache write-through", attributes=documents):
                await self._write_through(outcome.docs)
        return batch

    async def _apply_tx(self, conn: asyncpg.Connection, items: Sequence[Item]) -> _Outcome:
        """Everything a batch writes, inside the caller's transaction: in parts, each ending at an operator's
        skip record, which is applied where it stands in the log (``projector.skips``)."""
        outcome = _Outcome(AppliedBatch(), [])
        for part in skips.parts(items):
            outcome += await self._apply_part(conn, part)
            outcome.docs += await skips.apply(conn, self.log, part[-1], projection=self.projection, topic=self.topic,
                                              notify_channel=self.notify_channel, caching=self.cache is not None)
        return outcome

    async def _apply_part(self, conn: asyncpg.Connection, items: Sequence[Item]) -> _Outcome:
        """One part of a batch: its offsets locked, and what is new in it handed on to ``rows.apply`` (the rows
        loaded, folded and written)."""
        stored = await rows.lock_offsets(conn, self.projection, self.topic, sorted({i.rec.partition for i in items}))
        fresh = [i for i in items if i.rec.offset >= stored[i.rec.partition]]
        if not fresh:
            return _Outcome(AppliedBatch(skipped=len(items)), [])
        positions = {i.rec.partition: i.rec.offset + 1 for i in fresh}
        fold, docs = await rows.apply(conn, fresh, positions, projection=self.projection, topic=self.topic,
                                      notify_channel=self.notify_channel, caching=self.cache is not None)
        batch = AppliedBatch(len(fold.applied), len(items) - len(fresh), fold.duplicates, len(fold.poison), positions)
        return _Outcome(batch, docs)

    async def _write_through(self, docs: list[CachedDoc]) -> None:
        """Put the batch's documents in the cache; a failing Redis costs freshness, never the batch.

        Note: a document whose write failed may still sit in Redis at an older version (Redis was
        unreachable, not empty). Its key is remembered and deleted as soon as Redis answers again,
        before anything else is written, so a cache that comes back never serves it.
        """
        if self.cache is None or not (docs or self._dirty):
            return
        try:
            if self._dirty:
                await self.cache.delete_many(sorted(self._dirty))
                self._dirty.clear()
            if docs:
                await self.cache.put_many(_latest(docs))
        except CacheUnavailable as exc:
            metrics.CACHE_FAILURES.inc()
            self._dirty.update((d.kind, d.id) for d in docs)
            logger.warning("projector.cache_unavailable", error=str(exc), documents=len(docs),
                           stale_keys=len(self._dirty))


def _latest(docs: list[CachedDoc]) -> list[CachedDoc]:
    """One document per key, the newest (a batch applied by halves may carry several)."""
    newest: dict[tuple[str, str], CachedDoc] = {}
    for doc in docs:
        known = newest.get((doc.kind, doc.id))
        if known is None or known.version < doc.version:
            newest[(doc.kind, doc.id)] = doc
    return list(newest.values())


def _behind(items: Sequence[Item], share: int) -> bool:
    """Whether a batch filled some partition's ``share`` of the batch size: more is waiting in the log."""
    counts: dict[int, int] = {}
    for item in items:
        counts[item.rec.partition] = counts.get(item.rec.partition, 0) + 1
    return max(counts.values(), default=0) >= share


async def _stop_reading(reader: LogReader, ahead: asyncio.Task[list[Item]] | None) -> None:
    """Stop the read in flight and close ``reader``, hiding neither the error nor the cancellation under way."""
    if ahead is not None:
        ahead.cancel()
        await asyncio.gather(ahead, return_exceptions=True)
    with contextlib.suppress(Exception):
        await reader.close()
