"""The partition-owner runtime: the one writer of a partition of the events topic, and what it decides.

Every command, whoever sends it, reaches an owner as a ``Submission``, made by ``submission`` below
and nowhere else. An owner keeps the state of its partition's streams in memory, restored from the log
(``command_api.memory``). It serialises its commands in a queue (so a budget is never overspent and
a stale ``expected_version`` is refused without locks) and hands what it takes from the queue
together to ``command_api.group_commit``, which dedupes by ``command_id``, decides, and appends every
event of the commands it decided together as ONE record batch (all or none). Outcomes that leave no
event in the log (rejections, no-ops) go to the command-results topic, so that a repeated
``command_id`` gets its first outcome also after a restart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from opentelemetry.context import Context as OtelContext

from blackboard.command_api.errors import CommandError, NotOwner, Unavailable
from blackboard.command_api.group_commit import commit_group
from blackboard.command_api.memory import PartitionMemory
from blackboard.command_api.metrics import FENCED_WRITES
from blackboard.domain.decoding import command_fingerprint
from blackboard.events.codec import fenced, ownership_marker
from blackboard.events.log import LogError, OffsetConflict, PartitionedLog
from blackboard.schemas.api import AgentMetadata, CommandRequest, DryRun, Outcome
from blackboard.schemas.envelope import Envelope
from blackboard.schemas.registry import COMMAND_TYPES
from blackboard.schemas.tenancy import scope_id, scope_payload, scope_stream

log = structlog.get_logger(__name__)

#: Most commands one group commit decides and appends together.
MAX_GROUP = 256


# ── what an owner decides: a Submission, made here only ───────────────────────────────


@dataclass(slots=True)
class Submission:
    """A validated command waiting for its partition's owner (made by ``submission`` only)."""

    category: str
    stream: str
    command_type: str
    payload: msgspec.Struct
    command_id: str
    fingerprint: str
    actor: str
    #: The tenant of the principal that sent it (``None``: sent from inside, by a process manager).
    tenant: str | None
    correlation_id: str
    causation_id: str
    expected_version: int | None
    #: The request, with its ``command_id``: what goes on the commands topic if it is routed.
    request: CommandRequest
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


def submission(request: CommandRequest, payload: msgspec.Struct, *, actor: str, tenant: str | None = None,
               fingerprint: str | None = None, trace: OtelContext | None = None,
               source_offset: int | None = None) -> Submission:
    """The ``Submission`` of ``request`` (whose ``payload`` is already decoded and checked), sent by ``actor``.

    A request without ``command_id`` gets a fresh one; correlation and causation default to the
    command id. ``fingerprint`` defaults to ``command_fingerprint(request)`` (give it when it is known).
    """
    command_id = request.command_id or uuid.uuid4().hex
    if request.command_id is None:
        request = msgspec.structs.replace(request, command_id=command_id)
    # The ids the sender named are its tenant's: the stream, the command id (idempotency is per tenant) and the
    # entities it refers to become their stored form here, the one place every command passes
    # (schemas/tenancy.py). ``request`` stays as sent: it is what a routed command carries on the commands topic,
    # with the tenant in a header. Correlation and causation ids only link; reads of them are confined by stream.
    return Submission(
        category=COMMAND_TYPES[request.type][0], stream=scope_stream(tenant, request.stream),
        command_type=request.type, payload=scope_payload(tenant, request.type, payload),
        command_id=scope_id(tenant, command_id), fingerprint=fingerprint or command_fingerprint(request), actor=actor,
        tenant=tenant,
        correlation_id=request.correlation_id or command_id, causation_id=request.causation_id or command_id,
        expected_version=request.expected_version, request=request, trace=trace, dry_run=request.dry_run,
        agent=request.agent, source_offset=source_offset,
    )


# ── the owner: its queue, and the group commits it hands on ───────────────────────────


class PartitionOwner(PartitionMemory):
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
        super().__init__(partition, clock)
        self.log, self.events_topic, self.results_topic = log_, events_topic, results_topic
        self.stale = True
        #: This process's name in the group, when the partition was assigned to it (``None``: owned by
        #: configuration, as in the embedded default); it marks the log when it takes the partition.
        self.member: str | None = None
        #: Also publish the outcomes of commands decided here for callers of other processes to find.
        self.publish_all = False
        #: Where this owner's restore ended.
        self.restored_at: int | None = None
        #: Called between two group commits (snapshots are taken there); where the last one was taken,
        #: its write in flight, and what the last restore and the last written snapshot were.
        self.after_group: Callable[[PartitionOwner], None] | None = None
        self.snapshot_at = 0
        self.snapshot_task: asyncio.Task[None] | None = None
        self.restore_info: Any = None
        self.last_snapshot: Any = None
        #: Told of every batch of events once the log has acknowledged it: (topic, partition, first offset, events).
        self.appended: Callable[[str, int, int, Sequence[Envelope]], None] | None = None
        #: Set once the owner has restored (and, in a group, marked the log): it decides from then on.
        self.ready = asyncio.Event()
        self.queue: asyncio.Queue[Submission] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    _busy = False
    stopped = False

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
            try:
                await append_marker(self.log, self.events_topic, self.partition, member=self.member,
                                    epoch=self.epoch, at=self.next_offset, now=self.clock())
            except OffsetConflict:
                self.stale = True
                continue
            self.next_offset += 1
            self.marked_by = self.member
            log.info("owner.claimed", partition=self.partition, member=self.member, epoch=self.epoch,
                     at=self.next_offset - 1)
            return
        raise NotOwner(f"partition {self.partition}: another writer keeps appending; not claimed")

    def submit(self, sub: Submission) -> None:
        """Queue ``sub`` for the next group commit; answer ``not_owner`` at once when this owner has stopped."""
        if self.stopped:
            if not sub.future.done():
                sub.future.set_exception(NotOwner(f"partition {self.partition} is no longer decided here; retry"))
            return
        self.queue.put_nowait(sub)

    async def _serve(self) -> None:
        await self._take_partition()
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

    async def _take_partition(self) -> None:
        """Restore, and in a group mark the log (until that succeeds), before the first command is decided."""
        if self.member is None:
            if self.stale:
                await self._restore(self)
                self.stale = False
            return
        while True:
            try:
                await self.claim()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stale = True
                log.error("owner.claim_failed", partition=self.partition, error=repr(exc))
                await asyncio.sleep(0.5)

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
                await commit_group(self, group)
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


async def append_marker(log_: PartitionedLog, topic: str, partition: int, *, member: str, epoch: int, at: int,
                        now: datetime) -> None:
    """Mark ``topic[partition]`` at ``at``: from here on ``member`` writes it, at ``epoch``.

    Raises ``OffsetConflict`` when another writer appended after ``at`` (the marker then lands
    elsewhere and every fold passes over it).
    """
    record = fenced([ownership_marker(member, epoch, now)], at)
    try:
        await log_.append(topic, partition, record, expected_offset=at)
    except OffsetConflict:
        FENCED_WRITES.labels(str(partition)).inc()
        raise


def _unavailable(exc: Exception) -> CommandError:
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, OffsetConflict):
        return NotOwner("another writer appended to the partition; retry with the same command_id")
    if isinstance(exc, LogError):
        return Unavailable("the log did not acknowledge the append; retry with the same command_id",
                           code="log_unavailable")
    return Unavailable("the command could not be processed; retry with the same command_id", code="unavailable")
