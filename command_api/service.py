"""The command service: routes a validated command to the owner of its partition.

In the embedded default one process owns every partition. Restore reads each partition of
the events and command-results topics from the start to the exact high-water mark.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from blackboard.command_api.owner import IdempotencyKeyReused, PartitionOwner, Submission
from blackboard.events.log import LogUnavailable, PartitionedLog, StoredRecord
from blackboard.events.partitioner import partition_for
from blackboard.schemas.api import DryRun, Outcome
from blackboard.schemas.envelope import stream_partition_key

log = structlog.get_logger(__name__)


class CommandService:
    """Owns the partitions it was given and answers commands for them."""

    def __init__(self, log_: PartitionedLog, *, events_topic: str, results_topic: str, partitions: int) -> None:
        self.log = log_
        self.events_topic, self.results_topic = events_topic, results_topic
        self.partitions = partitions
        self.owners = {
            p: PartitionOwner(log_, events_topic=events_topic, results_topic=results_topic, partition=p)
            for p in range(partitions)
        }
        # command_id → partition, so that an id reused for a stream of another partition is caught.
        self._index: dict[str, int] = {}
        self._pending: set[str] = set()

    async def start(self) -> None:
        """Restore every owned partition, then start serving."""
        await self.restore(list(self.owners.values()))
        for owner in self.owners.values():
            owner.stale = False
            owner.start(lambda o: self.restore([o]))

    async def stop(self) -> None:
        await asyncio.gather(*(o.stop() for o in self.owners.values()))

    def partition_of(self, stream: str) -> int:
        return partition_for(stream_partition_key(stream), self.partitions)

    async def submit(self, sub: Submission) -> tuple[Outcome | DryRun, bool]:
        """Decide ``sub`` on its partition's owner; ``(outcome, replayed)``.

        Raises ``IdempotencyKeyReused`` when the id was used for a different command.
        """
        partition = self.partition_of(sub.stream)
        seen_in = self._index.setdefault(sub.command_id, partition)
        if seen_in != partition:
            raise IdempotencyKeyReused(sub.command_id)
        owner = self.owners[partition]
        known = None if sub.dry_run else owner.lookup(sub.command_id, sub.fingerprint)
        if known is not None:
            return known, True
        self._pending.add(sub.command_id)
        try:
            await owner.queue.put(sub)
            return await sub.future
        finally:
            self._pending.discard(sub.command_id)

    def peek(self, stream: str) -> tuple[Any, int] | None:
        """The state and version of ``stream`` as its owner holds it now, or ``None`` when it does not exist.

        Note: exact (no read-model lag), for checks a command needs about another stream before it is
        decided: a task's dependencies exist, a claiming node's skills. Every partition is owned here.
        """
        owner = self.owners[self.partition_of(stream)]
        known = owner.streams.get(stream)
        return (known.state, known.version) if known is not None else None

    def outcome_of(self, command_id: str) -> Outcome | str | None:
        """The outcome of ``command_id``; ``"pending"`` while it is being decided; ``None`` if unknown."""
        if command_id in self._pending:
            return "pending"
        partition = self._index.get(command_id)
        known = self.owners[partition].known.get(command_id) if partition is not None else None
        return known.outcome if known else None

    async def restore(self, owners: list[PartitionOwner]) -> None:
        """Rebuild the given owners from their partitions of both topics."""
        for owner in owners:
            owner.reset()
        await self._read_all(self.events_topic, {o.partition: o.fold_event for o in owners})
        await self._read_all(self.results_topic, {o.partition: o.fold_result for o in owners})
        for owner in owners:
            for command_id in owner.known:
                self._index[command_id] = owner.partition
            log.info("owner.restored", partition=owner.partition, next_offset=owner.next_offset,
                     streams=len(owner.streams), epoch=owner.epoch)

    async def _read_all(self, topic: str, folds: dict[int, Callable[[StoredRecord], None]]) -> None:
        ends = {p: await self.log.end_offset(topic, p) for p in folds}
        positions = {p: 0 for p in folds if ends[p] > 0}
        if not positions:
            return
        reader = self.log.reader(topic)
        try:
            for p in positions:
                await reader.seek(p, 0)
            empty_reads = 0
            while any(positions[p] < ends[p] for p in positions):
                records = await reader.read(max_records=5000, timeout=1.0)
                empty_reads = 0 if records else empty_reads + 1
                if empty_reads > 30:
                    raise LogUnavailable(f"{topic}: restore stalled at {positions}, the log said it ends at {ends}")
                for rec in records:
                    if positions.get(rec.partition, 0) <= rec.offset < ends[rec.partition]:
                        folds[rec.partition](rec)
                        positions[rec.partition] = rec.offset + 1
        finally:
            await reader.close()
