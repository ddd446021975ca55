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
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind

from blackboard.command_api import metrics
from blackboard.domain.decider import Context, Rejection
from blackboard.domain.registry import DECIDERS
from blackboard.events.codec import (
    PassedOver,
    UndecodableRecord,
    fenced,
    from_record,
    marker_of,
    ownership_marker,
    passed_over,
    stream_header,
    to_record,
)
from blackboard.events.log import LogError, OffsetConflict, PartitionedLog, Record, StoredRecord
from blackboard.events.tracing import current_trace_headers, distinct
from blackboard.schemas.api import (
    Accepted,
    AgentMetadata,
    CheckView,
    CommandRequest,
    DryRun,
    EventView,
    Outcome,
    Rejected,
    ServiceUnavailable,
)
from blackboard.schemas.changes import diff
from blackboard.schemas.envelope import Envelope, RecordedEvent, encode_token, stream_partition_key
from blackboard.schemas.registry import (
    VOLATILE_COMMANDS,
    UnknownEventType,
    decode_event,
    encode_payload,
    event_name,
    schema_version_of,
)

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

#: Most commands one group commit decides and appends together.
MAX_GROUP = 256


class StoredOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """A record of the command-results topic: what became of a command.

    Every command that left no event has one (so that its ``command_id`` keeps its first outcome
    across restarts); so has every command that came through the commands topic, whoever waits
    for it, with ``commands_offset`` (its offset there: a restore resumes the topic after the
    highest one). Only ``remember`` outcomes are folded into the idempotency memory: a dry run, a
    volatile no-op or a refusal (``error``) is an answer, not a decision.
    """

    command_id: str
    stream: str
    fingerprint: str
    outcome: Outcome | DryRun | None = None
    remember: bool = True
    replayed: bool = False
    #: A refusal that is not an outcome: HTTP status, and the body's code and message.
    error: RefusalBody | None = None
    commands_offset: int | None = None


class RefusalBody(msgspec.Struct, frozen=True):
    """A refusal carried to a waiter in another process: it answers with this status and body."""

    status: int
    code: str
    message: str


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
    future: asyncio.Future[tuple[Outcome | DryRun, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: The trace context of the request (its HTTP span): the owner decides in a task of its own.
    trace: OtelContext | None = None
    #: Decide and answer what would happen, append nothing, remember nothing.
    dry_run: bool = False
    agent: AgentMetadata | None = None
    #: The command's offset in ``commands[partition]`` when it came through the commands topic.
    source_offset: int | None = None
    #: The request as the caller sent it, when there was one: what goes on the commands topic if it is routed.
    request: CommandRequest | None = None


class IdempotencyKeyReused(Exception):
    """The ``command_id`` was first used for a different command."""

    def __init__(self, command_id: str) -> None:
        super().__init__(f"command_id {command_id!r} was already used for a different command")
        self.command_id = command_id


class NotOwner(ServiceUnavailable):
    """This process does not (or no longer) decide the command's partition: retry, it goes to the owner."""

    code = "not_owner"


class StreamUnreadable(ServiceUnavailable):
    """The stream has a record this build cannot fold: deciding would build on a hole (503)."""


#: Answers that are not outcomes: raised to the caller, never stored.
Refusal = IdempotencyKeyReused | StreamUnreadable


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
        #: Streams with a record this build cannot fold, and why: their commands are refused.
        self.unreadable: dict[str, str] = {}
        self.known: dict[str, _Known] = {}
        self.next_offset = 0
        self.results_offset = 0
        #: The next offset of ``commands[partition]`` to take: one past the highest answered there.
        self.commands_offset = 0
        self.epoch = 1
        self.stale = True
        #: This process's name in the group, when the partition was assigned to it (``None``: owned by
        #: configuration, as in the embedded default); it marks the log when it takes the partition.
        self.member: str | None = None
        #: Also publish the outcomes of commands decided here for callers of other processes to find.
        self.publish_all = False
        #: The owner the last ownership marker named, and where this owner's restore ended.
        self.marked_by: str | None = None
        self.restored_at: int | None = None
        #: Called between two group commits (snapshots are taken there); where the last one was taken,
        #: its write in flight, and what the last restore and the last written snapshot were.
        self.after_group: Callable[[PartitionOwner], None] | None = None
        self.snapshot_at = 0
        self.snapshot_task: asyncio.Task[None] | None = None
        self.restore_info: Any = None
        self.last_snapshot: Any = None
        #: Set once the owner has restored (and, in a group, marked the log): it decides from then on.
        self.ready = asyncio.Event()
        self.queue: asyncio.Queue[Submission] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # ── restore ──────────────────────────────────────────────────────────────────────

    def fold_event(self, rec: StoredRecord) -> None:
        """Fold one record of the events topic into the in-memory state (restore and catch-up).

        Note: a record of a stream this build cannot read (a newer schema version, a payload that
        does not decode) or that skips a version leaves a hole in that stream: the stream is marked
        unreadable and its commands are refused, never decided on the hole, until a build that
        reads it restores the partition.
        """
        self.next_offset = rec.offset + 1
        marker = marker_of(rec)
        if marker is not None and passed_over(rec) == "ownership marker":
            self.epoch = max(self.epoch, marker.epoch + 1)
            self.marked_by = marker.owner
            return
        try:
            ev = from_record(rec)
            env = ev.envelope
        except PassedOver:
            return  # a fenced write: it never happened, for every fold alike
        except UndecodableRecord as exc:
            self._hole(stream_header(rec), rec, f"undecodable: {exc}")
            return
        try:
            event = decode_event(env.type, env.schema_version, env.payload)
        except (UnknownEventType, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._hole(env.stream, rec, f"undecodable: {exc}")
            return
        self.epoch = max(self.epoch, env.writer_epoch + 1)
        category = env.stream.partition(":")[0]
        current = self.streams.get(env.stream)
        version = current.version if current else 0
        if env.stream in self.unreadable:
            return
        if env.stream_version <= version:  # a repeat of an event already folded (an ambiguous append)
            return
        if env.stream_version != version + 1 or category not in DECIDERS:
            self._hole(env.stream, rec, f"version {env.stream_version} of {env.stream} follows version {version}")
            return
        state = current.state if current else DECIDERS[category].initial_state
        self.streams[env.stream] = _Stream(DECIDERS[category].evolve(state, event), env.stream_version)
        self._remember_event(ev, event)

    def _hole(self, stream: str | None, rec: StoredRecord, reason: str) -> None:
        log.warning("restore.unreadable", partition=self.partition, offset=rec.offset, stream=stream, reason=reason)
        if stream is not None:
            self.unreadable.setdefault(stream, f"offset {rec.offset}: {reason}")

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
        if stored.commands_offset is not None:
            self.commands_offset = max(self.commands_offset, stored.commands_offset + 1)
        if stored.remember and isinstance(stored.outcome, Accepted | Rejected):
            self.known.setdefault(stored.command_id, _Known(stored.fingerprint, stored.outcome))

    def reset(self) -> None:
        """Forget everything before a restore from offset 0."""
        self.streams.clear()
        self.unreadable.clear()
        self.known.clear()
        self.next_offset = self.results_offset = self.commands_offset = 0
        self.marked_by = None

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
        """Start taking commands; ``restore`` is awaited whenever the owner is stale.

        An owner the group gave its partition to (``member`` set) first restores and marks the log
        (``claim``); commands queued meanwhile wait, so none is decided before the restore.
        """
        self._restore = restore
        self.ready.clear()
        self.stopped = False
        self._task = asyncio.create_task(self._serve(), name=f"owner-{self.partition}")

    async def stop(self, *, drain: float = 0.0) -> None:
        """Stop deciding. With ``drain``, first let the queued commands be decided for up to that long.

        Whatever is still queued is answered ``not_owner`` (retriable: the caller's next try goes
        to the partition's next owner).
        """
        if drain and self._task is not None and not self._task.done():
            deadline = asyncio.get_running_loop().time() + drain
            while (not self.queue.empty() or self._busy) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        self.stopped = True  # from now on nothing waits in the queue: ``submit`` answers at once
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self.queue.empty():
            sub = self.queue.get_nowait()
            if not sub.future.done():
                sub.future.set_exception(NotOwner(f"partition {self.partition} is no longer decided here; retry"))

    async def claim(self) -> None:
        """Mark the log: from its end on, ``member`` writes this partition, at an epoch above every earlier one.

        Note: the marker is appended fenced, like a batch: when another writer appended after our
        restore, it lands elsewhere, every fold passes over it, and we restore and try again. A
        writer that lost the partition without knowing it appends after this marker from then on,
        so none of its batches lands where it expected: none is acknowledged, none is folded.
        """
        assert self.member is not None
        for _ in range(5):
            if self.stale:
                await self._restore(self)
                self.stale = False
            self.epoch += 1  # above every epoch folded so far, and above our own last claim
            record = fenced([ownership_marker(self.member, self.epoch, self.clock())], self.next_offset)
            try:
                await self.log.append(self.events_topic, self.partition, record, expected_offset=self.next_offset)
            except OffsetConflict:
                self.stale = True
                continue
            self.next_offset += 1
            self.marked_by = self.member
            log.info("owner.claimed", partition=self.partition, member=self.member, epoch=self.epoch,
                     at=self.next_offset - 1)
            return
        raise NotOwner(f"partition {self.partition}: another writer keeps appending; not claimed")

    _busy = False
    stopped = False

    def submit(self, sub: Submission) -> None:
        """Queue ``sub`` for the next group commit; answer ``not_owner`` at once when this owner has stopped."""
        if self.stopped:
            if not sub.future.done():
                sub.future.set_exception(NotOwner(f"partition {self.partition} is no longer decided here; retry"))
            return
        self.queue.put_nowait(sub)

    async def _serve(self) -> None:
        if self.member is not None:
            while True:
                try:
                    await self.claim()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.stale = True
                    log.error("owner.claim_failed", partition=self.partition, error=repr(exc))
                    await asyncio.sleep(0.5)
        elif self.stale:
            await self._restore(self)
            self.stale = False
        self.ready.set()
        while True:
            group = [await self.queue.get()]
            while len(group) < MAX_GROUP and not self.queue.empty():
                group.append(self.queue.get_nowait())
            self._busy = True
            try:
                await self._decide_fresh(group)
            except asyncio.CancelledError:
                self.stale = True  # an append cut short may or may not have happened
                self._fail(group, NotOwner("this process stopped deciding the partition; retry"))
                raise
            except Exception as exc:  # infrastructure: answer retriably, restore before the next group
                self.stale = True
                log.error("owner.group_failed", partition=self.partition, error=repr(exc))
                self._fail(group, _unavailable(exc))
            else:
                if self.after_group is not None:
                    self.after_group(self)
            finally:
                self._busy = False

    async def _decide_fresh(self, group: list[Submission]) -> None:
        """Decide ``group`` on current state: when another writer moved the partition (nothing of ours
        was appended), restore and decide once more rather than answer from a stale state."""
        for attempt in (1, 2):
            if self.stale:
                await self._restore(self)
                self.stale = False
                if self.member is not None and self.marked_by != self.member:
                    # Another member marked the log after us: we lost the partition without being told.
                    self.stale = True
                    raise NotOwner(f"partition {self.partition} was taken over by {self.marked_by}")
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
        answers: list[tuple[Submission, Outcome | DryRun | Refusal, bool]] = []
        started = time.perf_counter()
        # The decide span of every command that appends events: the context its events carry.
        writers: list[SpanContext] = []
        for sub in group:
            appended = len(envelopes)
            with tracer.start_as_current_span(f"decide {sub.command_type}", context=sub.trace,
                                              attributes=_command_attributes(sub)) as span:
                answers.append(self._decide_one(sub, scratch, decided, envelopes))
                _set_outcome(span, answers[-1][1], answers[-1][2])
            if len(envelopes) > appended:
                writers.append(span.get_span_context())
        appending = time.perf_counter()
        metrics.DECIDE_SECONDS.observe(appending - started)
        metrics.GROUP_SIZE.observe(len(group))
        with self._append_span(group, writers, len(envelopes)):
            base = await self._append(envelopes)
        metrics.APPEND_SECONDS.observe(time.perf_counter() - appending)
        self._commit(scratch, decided, envelopes, base)
        await self._append_results(self._results(answers, decided))
        taken = [sub.source_offset for sub in group if sub.source_offset is not None]
        if taken:
            self.commands_offset = max(self.commands_offset, max(taken) + 1)
        for sub, answer, replayed in answers:
            if sub.future.done():
                # Its caller went away (a cancelled request): the decision stands, nobody waits for the answer.
                continue
            if isinstance(answer, (IdempotencyKeyReused, StreamUnreadable)):
                metrics.COMMANDS.labels(sub.command_type, "idempotency_key_reused" if isinstance(
                    answer, IdempotencyKeyReused) else "stream_unreadable").inc()
                sub.future.set_exception(answer)
            elif isinstance(answer, DryRun):
                metrics.COMMANDS.labels(sub.command_type, "dry_run").inc()
                sub.future.set_result((answer, False))
            else:
                final = self.known[sub.command_id].outcome if sub.command_id in self.known else answer
                label = "replayed" if replayed else "accepted" if isinstance(final, Accepted) else "rejected"
                metrics.COMMANDS.labels(sub.command_type, label).inc()
                sub.future.set_result((final, replayed))

    def _results(self, answers: Sequence[tuple[Submission, Outcome | DryRun | Refusal, bool]],
                 decided: dict[str, _Known]) -> list[StoredOutcome]:
        """What the group leaves on the command-results topic, once its events are in the log.

        Note: every outcome that left no event (it is remembered only there), and every answer to
        a command that came through the commands topic (its sender waits there, and the offset
        tells a restore where to resume); with ``publish_all``, every outcome decided here.
        """
        results = []
        for sub, answer, replayed in answers:
            remembered = sub.command_id in decided and not replayed and not sub.dry_run
            final = self.known[sub.command_id].outcome if remembered else answer
            left_events = isinstance(final, Accepted) and bool(final.events)
            wanted = (sub.source_offset is not None or (remembered and not left_events)
                      or (self.publish_all and not sub.dry_run))
            if not wanted:
                continue
            error, outcome = None, None
            if isinstance(final, IdempotencyKeyReused):
                error = RefusalBody(422, "idempotency_key_reused", str(final))
            elif isinstance(final, StreamUnreadable):
                error = RefusalBody(503, final.code, str(final))
            else:
                outcome = final
            results.append(StoredOutcome(sub.command_id, sub.stream, sub.fingerprint, outcome, remember=remembered,
                                         replayed=replayed, error=error, commands_offset=sub.source_offset))
        return results

    def _decide_one(
        self, sub: Submission, scratch: dict[str, _Stream], decided: dict[str, _Known], envelopes: list[Envelope]
    ) -> tuple[Submission, Outcome | DryRun | Refusal, bool]:
        prior = decided.get(sub.command_id) or self.known.get(sub.command_id)
        if prior is not None and not sub.dry_run:
            if prior.fingerprint != sub.fingerprint:
                return sub, IdempotencyKeyReused(sub.command_id), False
            return sub, prior.outcome, True
        if sub.stream in self.unreadable:
            return sub, StreamUnreadable(
                f"{sub.stream} holds an event this build cannot read ({self.unreadable[sub.stream]}); "
                "no command is decided on it until a build that reads it runs", code="stream_unreadable"), False
        current = scratch.get(sub.stream) or self.streams.get(sub.stream)
        version = current.version if current else 0
        decider = DECIDERS[sub.category]
        state = current.state if current else decider.initial_state
        ctx = Context(now=self.clock(), actor=sub.actor, stream=sub.stream)
        if not ctx.require("expected_version is the stream's version",
                           sub.expected_version is None or sub.expected_version == version):
            result: list[Any] | Rejection = Rejection(
                "version_conflict",
                f"{sub.stream} is at version {version}, the command expected {sub.expected_version}",
                {"stream": sub.stream, "expected_version": sub.expected_version, "actual_version": version},
            )
        else:
            result = decider.decide(state, sub.payload, ctx)
        if sub.dry_run:
            return sub, _dry_run(sub, state, version, result, ctx), False
        if isinstance(result, Rejection):
            outcome: Outcome = Rejected(sub.command_id, result.code, result.message, result.details)
        else:
            outcome = self._accept(sub, state, version, result, scratch, envelopes, ctx.now)
        if sub.command_type in VOLATILE_COMMANDS and not (isinstance(outcome, Accepted) and outcome.events):
            # Answered, not remembered: deciding it again is harmless (see VOLATILE_COMMANDS).
            if isinstance(outcome, Accepted):
                outcome = msgspec.structs.replace(
                    outcome, position=encode_token({self.partition: max(self.next_offset - 1, 0)}))
            return sub, outcome, False
        decided[sub.command_id] = _Known(sub.fingerprint, outcome)
        return sub, outcome, False

    def _accept(
        self, sub: Submission, state: Any, version: int, events: list[Any],
        scratch: dict[str, _Stream], envelopes: list[Envelope], now: datetime,
    ) -> Accepted:
        evolve = DECIDERS[sub.category].evolve
        views: list[EventView] = []
        agent = sub.agent or AgentMetadata()
        # Called inside the command's decide span: its events carry that span's context through the log.
        traceparent, tracestate = current_trace_headers()
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
                traceparent=traceparent, tracestate=tracestate,
                agent_run_id=agent.run_id, agent_model=agent.model, prompt_hash=agent.prompt_hash,
            )
            envelopes.append(env)
            views.append(EventView(env.event_id, name, sub.stream, version, msgspec.to_builtins(event)))
        scratch[sub.stream] = _Stream(state, version)
        # The position is filled in once the log has said where the batch went.
        return Accepted(sub.command_id, sub.stream, version, views, position="")

    def _append_span(self, group: Sequence[Submission], writers: Sequence[SpanContext],
                     events: int) -> AbstractContextManager[Span]:
        """The span of one group commit: a child of the first writer's decide span, linked to the others'.

        Note: one append carries the events of several commands, each of its own trace; the span
        lives in one of them and links to the rest, as a batch publish does in messaging.
        """
        contexts = distinct(writers)
        parent = trace.set_span_in_context(NonRecordingSpan(contexts[0])) if contexts else group[0].trace
        return tracer.start_as_current_span(
            f"append {self.events_topic}", context=parent, kind=SpanKind.PRODUCER,
            links=[Link(c) for c in contexts[1:]],
            attributes={"messaging.system": self.log.engine, "messaging.destination.name": self.events_topic,
                        "messaging.destination.partition.id": str(self.partition),
                        "messaging.batch.message_count": events, "blackboard.commands": len(group)},
        )

    async def _append(self, envelopes: list[Envelope]) -> int:
        if not envelopes:
            # Refusals and no-ops append no event, so no append can fence them: check instead that
            # no other writer has moved the partition since our state was built.
            end = await self.log.end_offset(self.events_topic, self.partition)
            if end != self.next_offset:
                raise OffsetConflict(self.events_topic, self.partition, self.next_offset, end, appended=False)
            return self.next_offset
        records = fenced([to_record(e) for e in envelopes], self.next_offset)
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


def _command_attributes(sub: Submission) -> dict[str, str]:
    return {"blackboard.command.id": sub.command_id, "blackboard.command.type": sub.command_type,
            "blackboard.stream": sub.stream}


def _set_outcome(span: Span, answer: Outcome | DryRun | Refusal, replayed: bool) -> None:
    if isinstance(answer, DryRun):
        outcome = "dry_run"
    elif isinstance(answer, IdempotencyKeyReused):
        outcome = "idempotency_key_reused"
    elif isinstance(answer, StreamUnreadable):
        outcome = "stream_unreadable"
    else:
        outcome = "replayed" if replayed else "accepted" if isinstance(answer, Accepted) else "rejected"
    span.set_attribute("blackboard.command.outcome", outcome)
    if isinstance(answer, Rejected):
        span.set_attribute("blackboard.rejection.code", answer.code)


def _dry_run(sub: Submission, state: Any, version: int, result: list[Any] | Rejection, ctx: Context) -> DryRun:
    """What ``sub`` would do to ``state``: its events, the fields they change, the rules checked.

    Note: the events are folded into a copy of the state only (states are immutable values);
    nothing reaches the log or the owner's memory.
    """
    checks = [CheckView(c.rule, c.passed) for c in ctx.checks]
    if isinstance(result, Rejection):
        return DryRun(sub.command_id, sub.stream, "rejected", version, [], [], checks, result.code, result.message,
                      result.details)
    evolve = DECIDERS[sub.category].evolve
    after = state
    views = []
    for i, event in enumerate(result, start=1):
        after = evolve(after, event)
        views.append(EventView("", event_name(event), sub.stream, version + i, msgspec.to_builtins(event)))
    changes = diff(msgspec.to_builtins(state), msgspec.to_builtins(after))
    return DryRun(sub.command_id, sub.stream, "accepted", version + len(result), views, changes, checks)


def _unavailable(exc: Exception) -> ServiceUnavailable:
    if isinstance(exc, ServiceUnavailable):
        return exc
    if isinstance(exc, OffsetConflict):
        return NotOwner("another writer appended to the partition; retry with the same command_id")
    if isinstance(exc, LogError):
        return ServiceUnavailable("the log did not acknowledge the append; retry with the same command_id",
                                  code="log_unavailable")
    return ServiceUnavailable("the command could not be processed; retry with the same command_id",
                              code="unavailable")
