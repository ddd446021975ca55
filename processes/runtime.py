"""The host of the process managers: reads the events topic, feeds every manager, sends what they ask for.

On start it reads the whole topic from the beginning, folding only (nothing is sent while the
history is replayed); once caught up with the end it sends every obligation the managers' states
still hold (``pending``), then reacts to each new event as it comes. A restart therefore sends
again what it may have sent before it stopped, under the same command ids, and the command
side answers those with their first outcomes: no effect happens twice.

Once caught up, the events this process appended itself can be handed over in memory (``Appended``, as
they were acknowledged by the log) instead of being read back and decoded from the log's records: every
event then is folded once, in its partition's order, whoever wrote it, since an event handed over whose
offset is past the managers' position means another writer appended before it, and those are read from
the log first. The log stays what a run starts from: a restart replays it from the beginning.

Time reaches the managers only through ``clock.ticked`` events in the log. When a deadline a
manager knows of has passed by the runtime's clock, it appends a tick (``clock.tick``) and
acts when it reads that tick back, so a replay of the log meets the same ticks at the same
places and the managers decide the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import stamina
import structlog

from blackboard.events.codec import from_record
from blackboard.events.log import LogReader, PartitionedLog, StoredRecord
from blackboard.processes.manager import CLOCK_STREAM, Intent, ProcessManager, Seen
from blackboard.schemas.api import Accepted, Outcome, Rejected
from blackboard.schemas.envelope import Envelope
from blackboard.schemas.registry import decode_event

log = structlog.get_logger(__name__)

#: Sends one command; answers its outcome (raises when the command side could not decide it).
Send = Callable[[Intent], Awaitable[Outcome]]
#: Ids of commands already answered, remembered so that an obligation seen again is not sent again.
REMEMBERED = 100_000
#: How often the runtime re-sends every obligation still open (one that failed to send, say).
RESYNC_SECONDS = 5.0
#: Least time between two ticks the runtime appends.
TICK_EVERY_SECONDS = 0.25
#: Commands sent at once.
CONCURRENCY = 64
#: Most records read at once.
READ_MAX = 2000
#: Once caught up, the pause after a read that found a few records, so that the next read takes what came
#: meanwhile: under a steady write load, one read per append (and its decoding set-up) cost the process
#: that decides more than the managers' own work. Every reaction comes at most this much later.
GATHER_SECONDS = 0.05
#: A run that stayed caught up this long was healthy: a failure after it starts again from the first, short wait.
HEALTHY_SECONDS = 10.0
#: Waits between two runs that failed (exponential with jitter, by ``stamina``), in seconds.
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_JITTER = 0.1, 30.0, 0.5
#: Most events ``Appended`` holds for a runtime that does not take them (replaying, or stopped): beyond, it
#: forgets them, and the runtime reads them from the log.
APPENDED_HELD = 10_000
#: Reads of the log in a row that may find nothing before an event handed over past them is given up on (the
#: run fails, and the next one replays the log).
GAP_READS = 5


class Appended:
    """Batches of events this process appended to the events topic, from their writer to the runtime, in memory.

    Note: a writer hands a batch over only once the log has acknowledged it, with the offset of its first
    event; nothing here is needed for correctness: what is forgotten (``APPENDED_HELD``) or never handed over
    is read from the log.
    """

    def __init__(self, topic: str, *, held: int = APPENDED_HELD) -> None:
        self.topic, self.held = topic, held
        self._batches: list[tuple[int, int, Sequence[Envelope]]] = []
        self._events = 0
        self._ready = asyncio.Event()
        #: Batches forgotten because nobody took them.
        self.forgotten = 0

    def put(self, topic: str, partition: int, base: int, envelopes: Sequence[Envelope]) -> None:
        """``envelopes`` were appended to ``topic[partition]`` at offsets ``base`` and on."""
        if topic != self.topic or not envelopes:
            return
        if self._events + len(envelopes) > self.held:
            self.forgotten += len(self._batches)
            self._batches, self._events = [], 0
        self._batches.append((partition, base, envelopes))
        self._events += len(envelopes)
        self._ready.set()

    async def take(self, timeout: float) -> list[tuple[int, int, Sequence[Envelope]]]:
        """Every batch handed over since the last take, waiting up to ``timeout`` for one."""
        if not self._batches:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        taken, self._batches, self._events = self._batches, [], 0
        return taken


class ProcessRuntime:
    """Runs ``managers`` over ``topic`` of ``log``; their commands go out through ``send``."""

    def __init__(self, log_: PartitionedLog, *, topic: str, managers: Sequence[ProcessManager], send: Send,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), clock_stream: str = CLOCK_STREAM,
                 healthy_seconds: float = HEALTHY_SECONDS, appended: Appended | None = None) -> None:
        self.log, self.topic, self.managers, self.send = log_, topic, list(managers), send
        #: The events this process appends, handed over in memory once caught up (``None``: read them back).
        self.appended = appended
        #: Where the reader stands in each partition (it is moved on past what was handed over before it reads).
        self._reader_at: dict[int, int] = {}
        self._read_at = 0.0
        #: Events folded as handed over, and read from the log.
        self.handed_over = self.read = 0
        self.healthy_seconds = healthy_seconds
        self._healthy_since: float | None = None
        self.clock, self.clock_stream = clock, clock_stream
        self.states: dict[str, Any] = {m.name: m.initial() for m in self.managers}
        self.positions: dict[int, int] = {}
        self.caught_up = False
        self.last_tick: datetime | None = None
        self.sent = 0
        self._answered: OrderedDict[str, None] = OrderedDict()
        self._inflight: set[str] = set()
        self._tick_sent_at = 0.0
        self._resync_at = 0.0
        self._stopping = asyncio.Event()

    async def stop(self) -> None:
        """Ask ``run`` to return after its current read, its reader closed.

        Note: cancelling a read while the Kafka client is still connecting can drop a connection
        unclosed; a stop between two reads closes everything in order.
        """
        self._stopping.set()

    async def run(self) -> None:
        """Run until stopped or cancelled; a failure is logged and the runtime starts over from the log (its
        managers' states are rebuilt by the replay, and what they send again is answered by its first outcome).

        Failures in a row wait longer each time (exponential, with jitter); a failure after a healthy run
        (caught up for ``healthy_seconds``) starts again from the shortest wait.
        """
        while not self._stopping.is_set():
            async for attempt in stamina.retry_context(
                    on=Exception, attempts=None, timeout=None, wait_initial=BACKOFF_FIRST, wait_max=BACKOFF_MAX,
                    wait_jitter=BACKOFF_JITTER, name="processes.run"):
                with attempt:  # a failure inside is swallowed here and the next attempt waits
                    await self._attempt()
            # Stopped, or a healthy run ended: what comes next starts with a fresh backoff.

    async def _attempt(self) -> None:
        """One run from the start of the log; raises a failure of an unhealthy run (for the backoff)."""
        self.states = {m.name: m.initial() for m in self.managers}
        self.positions, self.caught_up, self.last_tick, self._healthy_since = {}, False, None, None
        try:
            await self._run_once()
        except Exception as exc:
            log.error("processes.failed", error=repr(exc), exc_info=exc)
            healthy = self._healthy_since is not None and time.monotonic() - self._healthy_since >= self.healthy_seconds
            if not healthy:
                raise

    async def _run_once(self) -> None:
        partitions = await self.log.partition_count(self.topic)
        ends = {p: await self.log.end_offset(self.topic, p) for p in range(partitions)}
        reader = self.log.reader(self.topic)
        try:
            for p in range(partitions):
                await reader.seek(p, 0)
                self.positions[p] = self._reader_at[p] = 0
            self.caught_up = all(end == 0 for end in ends.values())
            if self.caught_up:
                await self._resync()
            # At least one read before a stop is honoured: a Kafka consumer stopped right after it was
            # assigned can leave a connection to a partition leader it was still opening.
            while True:
                if self.caught_up and self.appended is not None:
                    intents, came = await self._take_appended(reader)
                else:
                    records = await self._read(reader, timeout=0.2)
                    intents, came = self.fold(records), len(records)
                if self._stopping.is_set():
                    break
                # At the end offsets seen at start, or a read that found nothing more: the history is replayed.
                if not self.caught_up and (not came or all(self.positions[p] >= ends[p] for p in ends)):
                    self.caught_up = True
                    log.info("processes.caught_up", positions=self.positions, managers=[m.name for m in self.managers])
                    await self._resync()
                elif self.caught_up:
                    await self.dispatch(intents)
                if self.caught_up:
                    await self._tick_if_due()
                    if time.monotonic() >= self._resync_at:
                        await self._resync()
                    if 0 < came < READ_MAX:
                        await asyncio.sleep(GATHER_SECONDS)
        finally:
            await reader.close()

    async def _read(self, reader: LogReader, *, timeout: float) -> list[StoredRecord]:
        """The next records of the log, the reader first moved on past what was handed over in memory."""
        for p, at in self.positions.items():
            if at > self._reader_at.get(p, 0):
                await reader.seek(p, at)
                self._reader_at[p] = at
        records = await reader.read(max_records=READ_MAX, timeout=timeout)
        for rec in records:
            self._reader_at[rec.partition] = rec.offset + 1
        self.read += len(records)
        self._read_at = time.monotonic() + GATHER_SECONDS
        return records

    async def _take_appended(self, reader: LogReader) -> tuple[list[Intent], int]:
        """Fold what this process appended since, as handed over, and what other writers appended, from the log.

        Note: a batch handed over past the managers' position in its partition follows events another writer
        appended (or ones forgotten before they were taken): those are read from the log first. The log is
        read besides at least every ``GATHER_SECONDS``, for partitions only other writers append to.
        """
        assert self.appended is not None
        intents: list[Intent] = []
        before = self.handed_over + self.read
        for partition, base, envelopes in await self.appended.take(timeout=0.2):
            empty = 0
            while self.positions.get(partition, 0) < base:
                records = await self._read(reader, timeout=0.2)  # returns as soon as a record is there
                intents += self.fold(records)
                empty = 0 if records else empty + 1
                if empty >= GAP_READS:
                    raise RuntimeError(f"{self.topic}[{partition}]: offsets {self.positions.get(partition, 0)} to "
                                       f"{base} were appended before offset {base} but the log did not give them")
            intents += self.fold_appended(partition, base, envelopes)
        if time.monotonic() >= self._read_at:
            intents += self.fold(await self._read(reader, timeout=0))
        return intents, self.handed_over + self.read - before

    def fold(self, records: Sequence[StoredRecord]) -> list[Intent]:
        """Feed ``records`` to every manager, in order; the intents they answer (kept only once caught up)."""
        out: list[Intent] = []
        for rec in records:
            if rec.offset < self.positions.get(rec.partition, 0):
                continue
            self.positions[rec.partition] = rec.offset + 1
            seen = _seen(rec)
            if seen is not None:
                self._fold_seen(seen, out)
        return out

    def fold_appended(self, partition: int, base: int, envelopes: Sequence[Envelope]) -> list[Intent]:
        """Feed the events appended to ``partition`` at ``base`` and on to every manager, as ``fold`` feeds the
        records the log gives back for them; those before the managers' position are passed over."""
        out: list[Intent] = []
        start = self.positions.get(partition, 0)
        for offset, env in enumerate(envelopes, start=base):
            if offset < start:
                continue
            self.positions[partition] = offset + 1
            self.handed_over += 1
            seen = _seen_envelope(env)
            if seen is not None:
                self._fold_seen(seen, out)
        return out

    def _fold_seen(self, seen: Seen, out: list[Intent]) -> None:
        if seen.stream == self.clock_stream:
            self.last_tick = max(self.last_tick or seen.event.at, seen.event.at)
        for manager in self.managers:
            self.states[manager.name], intents = manager.handle(self.states[manager.name], seen)
            out.extend(intents)

    async def _resync(self) -> None:
        if self._healthy_since is None:  # the first resync of a run: it has just caught up
            self._healthy_since = time.monotonic()
        self._resync_at = time.monotonic() + RESYNC_SECONDS
        await self.dispatch([i for m in self.managers for i in m.pending(self.states[m.name])])

    async def dispatch(self, intents: Sequence[Intent]) -> None:
        """Send each intent not answered already nor in flight; a refusal goes back to its manager."""
        todo: dict[str, Intent] = {}
        for i in intents:
            cid = i.command_id
            if cid not in self._answered and cid not in self._inflight:
                todo[cid] = i
        batch = list(todo.values())
        for start in range(0, len(batch), CONCURRENCY):
            chunk = batch[start:start + CONCURRENCY]
            self._inflight.update(i.command_id for i in chunk)
            try:
                results = await asyncio.gather(*(self.send(i) for i in chunk), return_exceptions=True)
            finally:
                self._inflight.difference_update(i.command_id for i in chunk)
            follow: list[Intent] = []
            for i, result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    log.warning("processes.send_failed", manager=i.manager, command_type=i.type, stream=i.stream,
                                error=repr(result))
                    continue  # the next resync sends it again
                self.sent += 1
                self._remember(i.command_id)
                if isinstance(result, Rejected):
                    manager = next(m for m in self.managers if m.name == i.manager)
                    follow.extend(manager.rejected(self.states[manager.name], i, result.code))
                elif not isinstance(result, Accepted):
                    log.warning("processes.unexpected_outcome", outcome=repr(result))
            if follow:
                await self.dispatch(follow)

    def _remember(self, command_id: str) -> None:
        self._answered[command_id] = None
        if len(self._answered) > REMEMBERED:
            self._answered.popitem(last=False)

    def due(self) -> datetime | None:
        dues = [d for m in self.managers if (d := m.due(self.states[m.name])) is not None]
        return min(dues, default=None)

    async def _tick_if_due(self) -> None:
        """Append a tick when a deadline has passed that no tick in the log has reached yet."""
        due = self.due()
        if due is None or (self.last_tick is not None and self.last_tick >= due):
            return
        now = self.clock()
        if now < due or time.monotonic() - self._tick_sent_at < TICK_EVERY_SECONDS:
            return
        self._tick_sent_at = time.monotonic()
        tick = Intent("clock", self.clock_stream, "clock.tick", {"at": now.isoformat()})
        try:
            await self.send(tick)
        except Exception as exc:
            log.warning("processes.tick_failed", error=repr(exc))


def _seen(rec: StoredRecord) -> Seen | None:
    """The record as managers see it, or ``None`` when it does not decode (the projector sets it aside)."""
    try:
        env = from_record(rec).envelope
    except Exception:
        return None
    return _seen_envelope(env)


def _seen_envelope(env: Envelope) -> Seen | None:
    """The event as managers see it, decoded from its payload as a reader of the log decodes it."""
    try:
        event = decode_event(env.type, env.schema_version, env.payload)
    except Exception:
        return None
    at = env.occurred_at if env.occurred_at.tzinfo else env.occurred_at.replace(tzinfo=UTC)
    return Seen(env.stream, env.type, event, env.event_id, env.correlation_id, at)
