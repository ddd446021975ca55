"""The partition-owner runtime: the one writer of a partition of the events topic.

An owner keeps the state of its partition's streams in memory, restored from the log. It
serialises its commands (so a budget is never overspent and a stale ``expected_version`` is
refused without locks), dedupes by ``command_id``, decides, and appends every event of the
commands it decided together as ONE record batch (group commit: all or none). Outcomes that
leave no event in the log (rejections, no-ops) go to the command-results topic, so that a
repeated ``command_id`` gets its first outcome also after a restart.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from blackboard.command_api import metrics
from blackboard.command_api.decider import DECIDERS, Rejection
from blackboard.events.codec import UndecodableRecord, from_record, to_record
from blackboard.events.log import LogError, OffsetConflict, PartitionedLog, Record, StoredRecord
from blackboard.schemas.api import Accepted, EventView, Outcome, Rejected, ServiceUnavailable
from blackboard.schemas.envelope import Envelope, RecordedEvent, encode_token, stream_partition_key
from blackboard.schemas.registry import UnknownEventType, decode_event, encode_payload, event_name, schema_version_of

log = structlog.get_logger(__name__)

#: Most commands one group commit decides and appends together.
MAX_GROUP = 256


class StoredOutcome(msgspec.Struct, frozen=True):
    """What the command-results topic keeps of a command that left no event."""

    command_id: str
    stream: str
    fingerprint: str
    outcome: Outcome


@dataclass(slots=True)
class Submission:
    """A validated command waiting for its partition's owner."""

    category: str
    stream: str
    command_type: str
    payload: msgspec.Struct
    command_id: str
    fingerprint: str
    actor: str
    correlation_id: str
    causation_id: str
    expected_version: int | None
    future: asyncio.Future[tuple[Outcome, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class IdempotencyKeyReused(Exception):
    """The ``command_id`` was first used for a different command."""

    def __init__(self, command_id: str) -> None:
        super().__init__(f"command_id {command_id!r} was already used for a different command")
        self.command_id = command_id


@dataclass(slots=True)
class _Stream:
    state: Any
    version: int


@dataclass(slots=True)
class _Known:
    """A decided command: its outcome and the fingerprint that proves a repeat is the same command."""

    fingerprint: str
    outcome: Outcome


class PartitionOwner:
    """The single writer of ``events[partition]``.

    Note: the state is advanced only after the log acknowledged the batch; a failed or
    ambiguous append marks the owner stale, and it restores from the log before it decides again.
    """

    def __init__(
        self,
        log_: PartitionedLog,
        *,
        events_topic: str,
        results_topic: str,
        partition: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log, self.events_topic, self.results_topic = log_, events_topic, results_topic
        self.partition = partition
        self.clock = clock
        self.streams: dict[str, _Stream] = {}
        self.known: dict[str, _Known] = {}
        self.next_offset = 0
        self.results_offset = 0
        self.epoch = 1
        self.stale = True
        self.queue: asyncio.Queue[Submission] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # ── restore ──────────────────────────────────────────────────────────────────────

    def fold_event(self, rec: StoredRecord) -> None:
        """Fold one record of the events topic into the in-memory state (restore and catch-up)."""
        self.next_offset = rec.offset + 1
        try:
            ev = from_record(rec)
            env = ev.envelope
            event = decode_event(env.type, env.schema_version, env.payload)
        except (UndecodableRecord, UnknownEventType, msgspec.DecodeError) as exc:
            # The projector sets it aside with its reason; the decider cannot fold what it cannot read.
            log.warning("restore.undecodable", partition=self.partition, offset=rec.offset, reason=str(exc))
            return
        self.epoch = max(self.epoch, env.writer_epoch + 1)
        category = env.stream.partition(":")[0]
        current = self.streams.get(env.stream)
        version = current.version if current else 0
        if env.stream_version != version + 1 or category not in DECIDERS:
            log.warning("restore.out_of_order", stream=env.stream, version=env.stream_version, expected=version + 1)
            return
        state = current.state if current else DECIDERS[category].initial_state
        self.streams[env.stream] = _Stream(DECIDERS[category].evolve(state, event), env.stream_version)
        self._remember_event(ev, event)

    def _remember_event(self, ev: RecordedEvent, event: msgspec.Struct) -> None:
        env = ev.envelope
        view = EventView(env.event_id, env.type, env.stream, env.stream_version, msgspec.to_builtins(event))
        known = self.known.get(env.command_id)
        previous = known.outcome.events if known and isinstance(known.outcome, Accepted) else []
        outcome = Accepted(
            command_id=env.command_id,
            stream=env.stream,
            version=env.stream_version,
            events=[*previous, view],
            position=encode_token({self.partition: ev.offset}),
        )
        self.known[env.command_id] = _Known(env.command_hash, outcome)

    def fold_result(self, rec: StoredRecord) -> None:
        """Fold one record of the command-results topic (outcomes that left no event)."""
        self.results_offset = rec.offset + 1
        try:
            stored = msgspec.json.decode(rec.value or b"", type=StoredOutcome)
        except msgspec.DecodeError as exc:
            log.warning("restore.bad_result", partition=self.partition, offset=rec.offset, reason=str(exc))
            return
        self.known.setdefault(stored.command_id, _Known(stored.fingerprint, stored.outcome))

    def reset(self) -> None:
        """Forget everything before a restore from offset 0."""
        self.streams.clear()
        self.known.clear()
        self.next_offset = self.results_offset = 0

    # ── serving ──────────────────────────────────────────────────────────────────────

    def lookup(self, command_id: str, fingerprint: str) -> Outcome | None:
        """The first outcome of an already decided ``command_id``, or ``None``."""
        known = self.known.get(command_id)
        if known is None:
            return None
        if known.fingerprint != fingerprint:
            raise IdempotencyKeyReused(command_id)
        return known.outcome

    def start(self, restore: Callable[[PartitionOwner], Any]) -> None:
        """Start taking commands; ``restore`` is awaited whenever the owner is stale."""
        self._restore = restore
        self._task = asyncio.create_task(self._serve(), name=f"owner-{self.partition}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self.queue.empty():
            sub = self.queue.get_nowait()
            if not sub.future.done():
                sub.future.set_exception(ServiceUnavailable("the command service is stopping", code="shutting_down"))

    async def _serve(self) -> None:
        while True:
            group = [await self.queue.get()]
            while len(group) < MAX_GROUP and not self.queue.empty():
                group.append(self.queue.get_nowait())
            try:
                await self._decide_fresh(group)
            except asyncio.CancelledError:
                self._fail(group, ServiceUnavailable("the command service is stopping", code="shutting_down"))
                raise
            except Exception as exc:  # infrastructure: answer retriably, restore before the next group
                self.stale = True
                log.error("owner.group_failed", partition=self.partition, error=repr(exc))
                self._fail(group, _unavailable(exc))

    async def _decide_fresh(self, group: list[Submission]) -> None:
        """Decide ``group`` on current state: when another writer moved the partition (nothing of ours
        was appended), restore and decide once more rather than answer from a stale state."""
        for attempt in (1, 2):
            if self.stale:
                await self._restore(self)
                self.stale = False
            try:
                await self._decide_group(group)
                return
            except OffsetConflict as exc:
                self.stale = True
                if exc.appended or attempt == 2:
                    raise
                log.warning("owner.stale_state", partition=self.partition, expected=exc.expected, actual=exc.actual)

    @staticmethod
    def _fail(group: Sequence[Submission], exc: Exception) -> None:
        for sub in group:
            if not sub.future.done():
                sub.future.set_exception(exc)

    async def _decide_group(self, group: list[Submission]) -> None:
        scratch: dict[str, _Stream] = {}
        decided: dict[str, _Known] = {}
        envelopes: list[Envelope] = []
        answers: list[tuple[Submission, Outcome | IdempotencyKeyReused, bool]] = []
        started = time.perf_counter()
        for sub in group:
            answers.append(self._decide_one(sub, scratch, decided, envelopes))
        appending = time.perf_counter()
        metrics.DECIDE_SECONDS.observe(appending - started)
        metrics.GROUP_SIZE.observe(len(group))
        base = await self._append(envelopes)
        metrics.APPEND_SECONDS.observe(time.perf_counter() - appending)
        results = [
            StoredOutcome(cid, k.outcome.stream if isinstance(k.outcome, Accepted) else _stream_of(group, cid),
                          k.fingerprint, k.outcome)
            for cid, k in decided.items()
            if not (isinstance(k.outcome, Accepted) and k.outcome.events)
        ]
        await self._append_results(results)
        self._commit(scratch, decided, envelopes, base)
        for sub, answer, replayed in answers:
            if isinstance(answer, IdempotencyKeyReused):
                metrics.COMMANDS.labels(sub.command_type, "idempotency_key_reused").inc()
                sub.future.set_exception(answer)
            else:
                final = self.known[sub.command_id].outcome if sub.command_id in self.known else answer
                label = "replayed" if replayed else "accepted" if isinstance(final, Accepted) else "rejected"
                metrics.COMMANDS.labels(sub.command_type, label).inc()
                sub.future.set_result((final, replayed))

    def _decide_one(
        self, sub: Submission, scratch: dict[str, _Stream], decided: dict[str, _Known], envelopes: list[Envelope]
    ) -> tuple[Submission, Outcome | IdempotencyKeyReused, bool]:
        prior = decided.get(sub.command_id) or self.known.get(sub.command_id)
        if prior is not None:
            if prior.fingerprint != sub.fingerprint:
                return sub, IdempotencyKeyReused(sub.command_id), False
            return sub, prior.outcome, True
        current = scratch.get(sub.stream) or self.streams.get(sub.stream)
        version = current.version if current else 0
        decider = DECIDERS[sub.category]
        state = current.state if current else decider.initial_state
        if sub.expected_version is not None and sub.expected_version != version:
            result: list[Any] | Rejection = Rejection(
                "version_conflict",
                f"{sub.stream} is at version {version}, the command expected {sub.expected_version}",
                {"stream": sub.stream, "expected_version": sub.expected_version, "actual_version": version},
            )
        else:
            result = decider.decide(state, sub.payload)
        if isinstance(result, Rejection):
            outcome: Outcome = Rejected(sub.command_id, result.code, result.message, result.details)
        else:
            outcome = self._accept(sub, state, version, result, scratch, envelopes)
        decided[sub.command_id] = _Known(sub.fingerprint, outcome)
        return sub, outcome, False

    def _accept(
        self, sub: Submission, state: Any, version: int, events: list[Any],
        scratch: dict[str, _Stream], envelopes: list[Envelope],
    ) -> Accepted:
        evolve = DECIDERS[sub.category].evolve
        views: list[EventView] = []
        now = self.clock()
        for event in events:
            version += 1
            state = evolve(state, event)
            name = event_name(event)
            env = Envelope(
                event_id=str(uuid.uuid4()), stream=sub.stream, stream_version=version, type=name,
                schema_version=schema_version_of(name), occurred_at=now, command_id=sub.command_id,
                correlation_id=sub.correlation_id, causation_id=sub.causation_id, actor=sub.actor,
                writer_epoch=self.epoch, partition_key=stream_partition_key(sub.stream),
                payload=encode_payload(event), command_hash=sub.fingerprint,
            )
            envelopes.append(env)
            views.append(EventView(env.event_id, name, sub.stream, version, msgspec.to_builtins(event)))
        scratch[sub.stream] = _Stream(state, version)
        # The position is filled in once the log has said where the batch went.
        return Accepted(sub.command_id, sub.stream, version, views, position="")

    async def _append(self, envelopes: list[Envelope]) -> int:
        if not envelopes:
            # Refusals and no-ops append no event, so no append can fence them: check instead that
            # no other writer has moved the partition since our state was built.
            end = await self.log.end_offset(self.events_topic, self.partition)
            if end != self.next_offset:
                raise OffsetConflict(self.events_topic, self.partition, self.next_offset, end, appended=False)
            return self.next_offset
        records = [to_record(e) for e in envelopes]
        try:
            return await self.log.append(self.events_topic, self.partition, records, expected_offset=self.next_offset)
        except OffsetConflict:
            # Another writer appended: we are not (or no longer) the only owner. Never acknowledge.
            log.error("owner.fenced", partition=self.partition, expected=self.next_offset)
            raise

    async def _append_results(self, results: list[StoredOutcome]) -> None:
        if not results:
            return
        records = [
            Record(key=stream_partition_key(r.stream).encode(), value=msgspec.json.encode(r),
                   headers=(("type", b"command.outcome"), ("command_id", r.command_id.encode())))
            for r in results
        ]
        self.results_offset = await self.log.append(self.results_topic, self.partition, records) + len(records)

    def _commit(self, scratch: dict[str, _Stream], decided: dict[str, _Known], envelopes: list[Envelope],
                base: int) -> None:
        self.streams.update(scratch)
        last_offset_of: dict[str, int] = {}
        for i, env in enumerate(envelopes):
            last_offset_of[env.command_id] = base + i
        for cid, k in decided.items():
            outcome = k.outcome
            if isinstance(outcome, Accepted):
                offset = last_offset_of.get(cid, max(self.next_offset - 1, 0) if not outcome.events else base)
                outcome = msgspec.structs.replace(outcome, position=encode_token({self.partition: offset}))
            self.known[cid] = _Known(k.fingerprint, outcome)
        self.next_offset = base + len(envelopes)


def _stream_of(group: Sequence[Submission], command_id: str) -> str:
    return next(s.stream for s in group if s.command_id == command_id)


def _unavailable(exc: Exception) -> ServiceUnavailable:
    if isinstance(exc, OffsetConflict):
        return ServiceUnavailable("this process no longer owns the partition; retry", code="not_owner")
    if isinstance(exc, LogError):
        return ServiceUnavailable("the log did not acknowledge the append; retry with the same command_id",
                                  code="log_unavailable")
    return ServiceUnavailable("the command could not be processed; retry with the same command_id",
                              code="unavailable")
