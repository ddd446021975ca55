"""A rebuild's fold: a topic read into one projector from its stored offsets, the next batch read while the
current one is written."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from blackboard.events.log import LogReader, PartitionedLog
from blackboard.projector.fold import Item
from blackboard.projector.runtime import AppliedBatch, Projector

#: The projection a rebuild folds (its generation's schema holds only that one).
PROJECTION = "main"
READ_TIMEOUT = 0.5


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
    """The end offset of every partition of ``topic``: where a rebuild's catch-up aims."""
    return {p: await log.end_offset(topic, p) for p in range(await log.partition_count(topic))}
