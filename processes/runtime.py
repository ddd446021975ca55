"""The host of the process managers: reads the events topic, feeds every manager, sends what they ask for.

On start it reads the whole topic from the beginning, folding only (nothing is sent while the
history is replayed); once caught up with the end it sends every obligation the managers' states
still hold (``pending``), then reacts to each new event as it comes. A restart therefore sends
again what it may have sent before it stopped, under the same command ids, and the command
side answers those with their first outcomes: no effect happens twice.

Time reaches the managers only through ``clock.ticked`` events in the log. When a deadline a
manager knows of has passed by the runtime's clock, it appends a tick (``clock.tick``) and
acts when it reads that tick back, so a replay of the log meets the same ticks at the same
places and the managers decide the same.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import stamina
import structlog

from blackboard.events.codec import from_record
from blackboard.events.log import PartitionedLog, StoredRecord
from blackboard.processes.manager import CLOCK_STREAM, Intent, ProcessManager, Seen
from blackboard.schemas.api import Accepted, Outcome, Rejected
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


class ProcessRuntime:
    """Runs ``managers`` over ``topic`` of ``log``; their commands go out through ``send``."""

    def __init__(self, log_: PartitionedLog, *, topic: str, managers: Sequence[ProcessManager], send: Send,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), clock_stream: str = CLOCK_STREAM,
                 healthy_seconds: float = HEALTHY_SECONDS) -> None:
        self.log, self.topic, self.managers, self.send = log_, topic, list(managers), send
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
                self.positions[p] = 0
            self.caught_up = all(end == 0 for end in ends.values())
            if self.caught_up:
                await self._resync()
            # At least one read before a stop is honoured: a Kafka consumer stopped right after it was
            # assigned can leave a connection to a partition leader it was still opening.
            while True:
                records = await reader.read(max_records=READ_MAX, timeout=0.2)
                if self._stopping.is_set():
                    break
                intents = self.fold(records)
                # At the end offsets seen at start, or a read that found nothing more: the history is replayed.
                if not self.caught_up and (not records or all(self.positions[p] >= ends[p] for p in ends)):
                    self.caught_up = True
                    log.info("processes.caught_up", positions=self.positions, managers=[m.name for m in self.managers])
                    await self._resync()
                elif self.caught_up:
                    await self.dispatch(intents)
                if self.caught_up:
                    await self._tick_if_due()
                    if time.monotonic() >= self._resync_at:
                        await self._resync()
                    if 0 < len(records) < READ_MAX:
                        await asyncio.sleep(GATHER_SECONDS)
        finally:
            await reader.close()

    def fold(self, records: Sequence[StoredRecord]) -> list[Intent]:
        """Feed ``records`` to every manager, in order; the intents they answer (kept only once caught up)."""
        out: list[Intent] = []
        for rec in records:
            if rec.offset < self.positions.get(rec.partition, 0):
                continue
            self.positions[rec.partition] = rec.offset + 1
            seen = _seen(rec)
            if seen is None:
                continue
            if seen.stream == self.clock_stream:
                self.last_tick = max(self.last_tick or seen.event.at, seen.event.at)
            for manager in self.managers:
                self.states[manager.name], intents = manager.handle(self.states[manager.name], seen)
                out.extend(intents)
        return out

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
        event = decode_event(env.type, env.schema_version, env.payload)
    except Exception:
        return None
    at = env.occurred_at if env.occurred_at.tzinfo else env.occurred_at.replace(tzinfo=UTC)
    return Seen(env.stream, env.type, event, env.event_id, env.correlation_id, at)
