"""The command service: routes a validated command to the owner of its partition.

Every command goes through ``CommandService.submit`` as a ``Submission`` (made by
``command_api.owner.submission`` only): the route of ``POST /v1/commands`` makes it itself; the
checkpoint and cluster routes, the commands topic's intake, claims, the reservation sweeper and the
process managers call ``submit`` or ``submit_json`` below, which make it the same way.

Three ways to run (``mode``):

* ``all`` — this process owns every partition (the embedded default, or one command process).
* ``group`` — decider processes share the partitions through a group over the commands topic
  (``PartitionedLog.membership``): a command whose partition is decided here is decided at once
  (the fast path); any other goes onto the commands topic and its answer comes back on
  command-results (the routed path, ``routing.route``). A partition given to this process is
  restored and marked in the log (``PartitionOwner.claim``) before any command is decided on it;
  one taken away stops deciding once what is queued is decided, and what is left is routed.
* ``none`` — an API process that decides nothing itself and routes every command.

Restore reads each partition of the events and command-results topics to the exact high-water mark.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec
import structlog
from opentelemetry.context import Context as OtelContext

from blackboard.command_api import metrics
from blackboard.command_api.errors import IdempotencyKeyReused, NotOwner, Unavailable
from blackboard.command_api.known import MAX_BYTES, MAX_COMMANDS, BoundedIndex
from blackboard.command_api.owner import PartitionOwner, Submission, submission
from blackboard.command_api.restore import restore_owner
from blackboard.command_api.routing import CommandIntake, ResultsTail, route
from blackboard.command_api.snapshots import Snapshot, take_snapshot, write_snapshot
from blackboard.domain.decoding import validate_command
from blackboard.events.log import PartitionedLog
from blackboard.events.partitioner import partition_for
from blackboard.schemas.api import CommandRequest, DryRun, Outcome
from blackboard.schemas.envelope import Envelope, stream_partition_key

log = structlog.get_logger(__name__)

Mode = Literal["all", "group", "none"]
#: How long a partition taken away from this process may go on deciding what was queued on it.
DRAIN_SECONDS = 2.0
#: Most streams whose partition ``partition_of`` remembers.
PARTITION_MEMORY = 65_536


class CommandService:
    """Owns the partitions it was given (all of them, or the group's share) and answers commands for any."""

    def __init__(self, log_: PartitionedLog, *, events_topic: str, results_topic: str, partitions: int,
                 commands_topic: str = "commands", dead_letters_topic: str = "commands-dead-letters",
                 mode: Mode = "all", member_id: str | None = None, group: str = "blackboard-deciders",
                 session_timeout: float = 10.0, route_timeout: float = 30.0, command_timeout: float = 5.0,
                 snapshots_topic: str | None = None, snapshot_every: int = 0,
                 known_max_commands: int = MAX_COMMANDS, known_max_bytes: int = MAX_BYTES) -> None:
        self.log = log_
        self.events_topic, self.results_topic = events_topic, results_topic
        self.commands_topic, self.dead_letters_topic = commands_topic, dead_letters_topic
        self.partitions, self.mode = partitions, mode
        self.member_id = member_id or f"decider-{uuid.uuid4().hex[:12]}"
        self.group, self.session_timeout, self.route_timeout = group, session_timeout, route_timeout
        self.command_timeout = command_timeout
        self.snapshots_topic, self.snapshot_every = snapshots_topic, snapshot_every
        self.known_max_commands, self.known_max_bytes = known_max_commands, known_max_bytes
        self._appended: Callable[[str, int, int, Sequence[Envelope]], None] | None = None
        self.owners: dict[int, PartitionOwner] = {}
        if mode == "all":
            self.owners = {p: self._owner(p) for p in range(partitions)}
        metrics.PARTITIONS.set(partitions)
        metrics.OWNED_PARTITIONS.set(len(self.owners))
        # command_id → partition, so that an id reused for a stream of another partition is caught; as
        # bounded as the owners' memories (an id they forgot is no longer checked across partitions).
        self._index = BoundedIndex(known_max_commands * max(1, len(self.owners) or partitions))
        self._pending: set[str] = set()
        self._partition_of: dict[str, int] = {}
        # Every mode follows the answers: a command written onto the commands topic is asked about by id.
        self.tail: ResultsTail | None = ResultsTail(log_, results_topic, partitions)
        self.intake = CommandIntake(log_, topic=commands_topic, results_topic=results_topic,
                                    dead_letters_topic=dead_letters_topic, partitions=partitions,
                                    owners=lambda: self.owners) if mode != "none" else None
        self.membership: Any = None
        #: Owners of partitions taken away, kept in case the group gives them back.
        self._parked: dict[int, PartitionOwner] = {}
        #: Commands sent on to their owner through the commands topic, and answered fast here.
        self.routed = self.local = 0

    def on_appended(self, appended: Callable[[str, int, int, Sequence[Envelope]], None]) -> None:
        """Tell ``appended`` of every batch of events an owner of this process appends, once acknowledged:
        (topic, partition, offset of its first event, its events)."""
        self._appended = appended
        for owner in [*self.owners.values(), *self._parked.values()]:
            owner.appended = appended

    def _owner(self, partition: int) -> PartitionOwner:
        owner = PartitionOwner(self.log, events_topic=self.events_topic, results_topic=self.results_topic,
                               partition=partition)
        owner.appended = self._appended
        owner.after_group = self._maybe_snapshot
        owner.known.bound(max_count=self.known_max_commands, max_bytes=self.known_max_bytes)
        return owner

    async def start(self) -> None:
        """Restore every owned partition (or join the group), then start serving."""
        if self.tail is not None:
            await self.tail.start()
        if self.mode == "all":
            await self.restore(list(self.owners.values()))
            for owner in self.owners.values():
                owner.stale = False
                owner.start(lambda o: self.restore([o]))
        if self.intake is not None:
            self.intake.start()
        if self.mode == "group":
            self.membership = self.log.membership(self.group, self.commands_topic, member_id=self.member_id,
                                                  session_timeout=self.session_timeout)
            await self.membership.start(self._assigned, self._revoked)

    async def _assigned(self, partitions: frozenset[int]) -> None:
        for p in sorted(partitions):
            if p in self.owners:
                continue
            # A partition given back after a rebalance keeps what its owner knew: its marker, appended
            # where that owner's state ends, proves nobody wrote since (else it restores first).
            owner = self._parked.pop(p, None) or self._owner(p)
            owner.member, owner.publish_all = self.member_id, True
            owner.start(lambda o: self.restore([o]))
            self.owners[p] = owner
        metrics.OWNED_PARTITIONS.set(len(self.owners))
        log.info("deciders.assigned", member=self.member_id, partitions=sorted(partitions))
        if self.intake is not None:
            self.intake.changed.set()

    async def _revoked(self, partitions: frozenset[int]) -> None:
        taken = [self.owners.pop(p) for p in sorted(partitions) if p in self.owners]
        metrics.OWNED_PARTITIONS.set(len(self.owners))
        if self.intake is not None:
            self.intake.changed.set()
        await asyncio.gather(*(o.stop(drain=DRAIN_SECONDS) for o in taken))
        self._parked.update({o.partition: o for o in taken})
        # Hand over with a snapshot where the partition ends, so its next owner restores fast.
        for owner in taken:
            if owner.snapshot_task is not None:
                await asyncio.gather(owner.snapshot_task, return_exceptions=True)
            fresh = not owner.stale and owner.snapshot_at < owner.next_offset
            if self.snapshot_every and self.snapshots_topic and fresh:
                owner.snapshot_at = owner.next_offset
                await self._write_snapshot(owner, take_snapshot(owner))
        log.info("deciders.revoked", member=self.member_id, partitions=sorted(partitions))

    async def stop(self) -> None:
        if self.membership is not None:
            await self.membership.close()
        if self.intake is not None:
            await self.intake.close()
        await asyncio.gather(*(o.stop() for o in self.owners.values()))
        pending = [t for o in [*self.owners.values(), *self._parked.values()] if (t := o.snapshot_task) is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        if self.tail is not None:
            await self.tail.close()

    def partition_of(self, stream: str) -> int:
        """``stream``'s partition (murmur2 of its partition key), remembered for the streams met lately.

        Note: murmur2 in Python cost a few µs per command; the memory is emptied when it holds
        ``PARTITION_MEMORY`` streams, so it stays bounded.
        """
        partition = self._partition_of.get(stream)
        if partition is None:
            if len(self._partition_of) >= PARTITION_MEMORY:
                self._partition_of.clear()
            partition = self._partition_of[stream] = partition_for(stream_partition_key(stream), self.partitions)
        return partition

    def owns(self, stream: str) -> bool:
        """Whether ``stream``'s partition is decided in this process (its state can be peeked here)."""
        return self.partition_of(stream) in self.owners

    async def submit(self, sub: Submission) -> tuple[Outcome | DryRun, bool]:
        """Decide ``sub`` on its partition's owner, here or through the commands topic; ``(outcome, replayed)``.

        Raises a ``CommandError`` when it was not decided: ``IdempotencyKeyReused`` when the id was used for
        a different command, ``NotOwner`` or ``Unavailable`` when a retry with the same id can help.
        """
        partition = self.partition_of(sub.stream)
        for _ in range(3):
            owner = self.owners.get(partition)
            if owner is None:
                if self.tail is None or self.mode == "all":
                    raise NotOwner(f"partition {partition} is not decided here")
                self.routed += 1
                return await route(self.log, self.tail, sub, topic=self.commands_topic, partition=partition,
                                   routed_by=self.member_id, timeout=self.route_timeout)
            try:
                return await self._local(owner, partition, sub)
            except NotOwner:
                if self.tail is None or self.mode == "all":
                    raise
                # Taken away (or marked by another member before the group said so): its owner decides it.
                self.routed += 1
                return await route(self.log, self.tail, sub, topic=self.commands_topic, partition=partition,
                                   routed_by=self.member_id, timeout=self.route_timeout)
        raise NotOwner(f"partition {partition} changed hands while the command waited; retry")

    async def _local(self, owner: PartitionOwner, partition: int, sub: Submission) -> tuple[Outcome | DryRun, bool]:
        seen_in = self._index.setdefault(sub.command_id, partition)
        if seen_in != partition:
            raise IdempotencyKeyReused(sub.command_id)
        known = None if sub.dry_run else owner.lookup(sub.command_id, sub.fingerprint)
        if known is not None:
            return known, True
        self.local += 1
        self._pending.add(sub.command_id)
        # The caller waits on a future of its own, woken by the answer or the timeout: when it stops waiting
        # (cancelled, or timed out), the owner does not stop deciding (nor forget the outcome). The same as
        # ``wait_for(shield(sub.future))``, with one future and one callback fewer per command.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        pending = self._pending

        def answered(_: object) -> None:
            pending.discard(sub.command_id)
            if not waiter.done():
                waiter.set_result(None)

        sub.future.add_done_callback(answered)
        owner.submit(sub)
        timer = loop.call_later(self.command_timeout, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
        if sub.future.done():
            return sub.future.result()
        metrics.OUTCOMES_PENDING.inc()
        raise Unavailable(
            f"not decided within {self.command_timeout:g}s (the log has not acknowledged yet); the command stays "
            "queued and is decided at most once: retry with the same command_id to learn its outcome",
            code="outcome_pending")

    def peek(self, stream: str) -> tuple[Any, int] | None:
        """The state and version of ``stream`` as its owner holds it now, or ``None`` when it does not exist.

        Note: exact (no read-model lag), for checks a command needs about another stream before it is
        decided: a task's dependencies exist, a claiming node's skills. Only the partitions decided in
        this process can be peeked (``owns``); for another, ``None``.
        """
        owner = self.owners.get(self.partition_of(stream))
        known = owner.streams.get(stream) if owner is not None else None
        return (known.state, known.version) if known is not None else None

    def outcome_of(self, command_id: str) -> Outcome | str | None:
        """The outcome of ``command_id``; ``"pending"`` while it is being decided; ``None`` if unknown here.

        Note: the owners of this process know every command of their partitions; the results tail
        knows the recent answers of every partition, also those that are not remembered (a record on the
        commands topic that was no command).
        """
        if command_id in self._pending:
            return "pending"
        for owner in self.owners.values():
            if (found := owner.known.get(command_id)) is not None:
                return found.outcome
        stored = self.tail.outcome_of(command_id) if self.tail is not None else None
        if stored is not None and stored.outcome is not None and not isinstance(stored.outcome, DryRun):
            return stored.outcome
        return None

    def partition_states(self) -> list[dict[str, Any]]:
        """What an operator asks of each partition decided here."""
        return [
            {"partition": p, "member": o.member or self.member_id, "epoch": o.epoch, "marked_by": o.marked_by,
             "ready": o.ready.is_set(), "stale": o.stale,
             "restored_at": o.restored_at, "next_offset": o.next_offset, "commands_offset": o.commands_offset,
             "queue_depth": o.queue.qsize(), "streams": len(o.streams), "known": len(o.known),
             "idempotency": o.known.state(),
             "restore": msgspec.to_builtins(o.restore_info) if o.restore_info else None,
             "last_snapshot": msgspec.to_builtins(o.last_snapshot) if o.last_snapshot else None}
            for p, o in sorted(self.owners.items())
        ]

    async def restore(self, owners: list[PartitionOwner]) -> None:
        """Rebuild the given owners: each from its latest usable snapshot, then the events after it."""
        infos = await asyncio.gather(*(restore_owner(self.log, o, events_topic=self.events_topic,
                                                     results_topic=self.results_topic,
                                                     snapshots_topic=self.snapshots_topic) for o in owners))
        for owner, info in zip(owners, infos, strict=True):
            for command_id in owner.known:
                self._index[command_id] = owner.partition
            owner.restored_at = owner.next_offset
            owner.snapshot_at = info.from_snapshot if info.from_snapshot is not None else 0
            owner.restore_info = info
            metrics.RESTORES.labels("snapshot" if info.from_snapshot is not None else "log").inc()
            log.info("owner.restored", partition=owner.partition, next_offset=owner.next_offset,
                     streams=len(owner.streams), epoch=owner.epoch, from_snapshot=info.from_snapshot,
                     events_replayed=info.events_replayed, seconds=round(info.seconds, 3))

    def _maybe_snapshot(self, owner: PartitionOwner) -> None:
        """Called between two group commits: snapshot the owner when ``snapshot_every`` events came since the last."""
        if not self.snapshot_every or self.snapshots_topic is None:
            return
        if owner.next_offset - owner.snapshot_at < self.snapshot_every or owner.snapshot_task is not None:
            return
        owner.snapshot_at = owner.next_offset
        snapshot = take_snapshot(owner)  # a consistent capture: states are immutable values
        owner.snapshot_task = asyncio.create_task(self._write_snapshot(owner, snapshot),
                                                  name=f"snapshot-{owner.partition}")

    async def _write_snapshot(self, owner: PartitionOwner, snapshot: Snapshot) -> None:
        assert self.snapshots_topic is not None
        try:
            info = await write_snapshot(self.log, self.snapshots_topic, snapshot,
                                        max_record_bytes=getattr(self.log, "max_record_bytes", 1_048_576))
            owner.last_snapshot = info
            log.info("owner.snapshot", partition=owner.partition, events_offset=info.events_offset, bytes=info.bytes)
        except Exception as exc:  # a restore then reads more of the log: slower, never wrong
            log.warning("owner.snapshot_failed", partition=owner.partition, error=repr(exc))
        finally:
            owner.snapshot_task = None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# ── the one submit path: a request, as a Submission, to its partition's owner ──────────


async def submit(service: CommandService, request: CommandRequest, payload: msgspec.Struct, *, actor: str,
                 tenant: str | None = None, fingerprint: str | None = None,
                 trace: OtelContext | None = None) -> tuple[Outcome | DryRun, bool]:
    """Decide ``request`` on its partition's owner; ``(outcome, replayed)``.

    Raises a ``CommandError`` when it was not decided (``IdempotencyKeyReused``, ``NotOwner``, …).
    """
    return await service.submit(submission(request, payload, actor=actor, tenant=tenant, fingerprint=fingerprint,
                                           trace=trace))


async def submit_json(service: CommandService, *, stream: str, type_: str, payload: dict[str, Any], command_id: str,
                      actor: str, tenant: str | None = None, correlation_id: str = "",
                      causation_id: str = "") -> Outcome:
    """Validate the command exactly as ``POST /v1/commands`` does and decide it; its outcome.

    For commands sent from inside a process (the process managers, the task graph). Raises
    ``InvalidCommand`` for a command that is not valid (a bug of the sender, never retried) and a
    ``CommandError`` when the owner could not decide it (retry with the same id when ``retriable``).
    """
    body: dict[str, Any] = {"type": type_, "stream": stream, "command_id": command_id, "payload": payload}
    if correlation_id:
        body["correlation_id"] = correlation_id
    if causation_id:
        body["causation_id"] = causation_id
    valid = validate_command(msgspec.json.encode(body))
    outcome, _ = await submit(service, valid.request, valid.payload, actor=actor, tenant=tenant,
                              fingerprint=valid.fingerprint)
    assert not isinstance(outcome, DryRun)  # dry_run is never set here
    return outcome
