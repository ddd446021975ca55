"""The restore of a partition owner: its latest usable snapshot, then the log after it.

Snapshots are read back here (``load_snapshot``), their chunks checked and put together; a torn
set (a crash between the appends of its chunks) is passed over to the one before it. Then the
events and command-results topics are folded from where the snapshot left off to their exact ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import structlog

from blackboard.command_api.memory import PartitionMemory
from blackboard.command_api.snapshots import (
    Snapshot,
    SnapshotUnusable,
    apply_snapshot,
    chunk_header,
    decode_snapshot,
    schema_fingerprint,
)
from blackboard.events.log import LogUnavailable, PartitionedLog, StoredRecord, UnknownTopic

log = structlog.get_logger(__name__)

#: Snapshots ``load_snapshot`` looks at, the latest first, to get past torn writes.
MAX_LOOKBACK = 3
_READ_BATCH = 10_000
_STALL_READS = 30


class RestoreInfo(msgspec.Struct, frozen=True):
    """How one owner was restored: ``from_snapshot`` is the snapshot's events offset, ``None`` from offset 0."""

    partition: int
    from_snapshot: int | None
    events_replayed: int
    results_replayed: int
    seconds: float


# ── reading snapshots ───────────────────────────────────────────────────────────────────


async def load_snapshot(log_: PartitionedLog, topic: str, partition: int) -> Snapshot | None:
    """The latest complete snapshot of ``partition`` this build can read, or ``None`` (with a warning why).

    Reads the last record; when it is the last chunk of a snapshot, the chunks before it. A torn
    set (its last chunk never written) is passed over to the snapshot before it, up to
    ``MAX_LOOKBACK`` sets; a set of another schema, or one that does not decode, ends the search.
    """
    try:
        # Asked first because a Kafka broker may create a topic it is merely asked the end of.
        partitions = await log_.partition_count(topic)
    except UnknownTopic:
        log.warning("snapshot.ignored", topic=topic, partition=partition, reason="no snapshots topic")
        return None
    if partition >= partitions:
        log.warning("snapshot.ignored", topic=topic, partition=partition, reason=f"the topic has {partitions}")
        return None
    end = await log_.end_offset(topic, partition)
    for _ in range(MAX_LOOKBACK):
        if end <= 0:
            return None
        try:
            return await _load_ending_at(log_, topic, partition, end)
        except _Torn as torn:
            log.warning("snapshot.ignored", topic=topic, partition=partition, reason=str(torn))
            end = torn.starts_at
        except SnapshotUnusable as exc:
            log.warning("snapshot.ignored", topic=topic, partition=partition, reason=str(exc))
            return None
    return None


class _Torn(SnapshotUnusable):
    """A chunk set whose chunks are not all there; ``starts_at`` is where it began."""

    def __init__(self, message: str, starts_at: int) -> None:
        super().__init__(message)
        self.starts_at = starts_at


async def _load_ending_at(log_: PartitionedLog, topic: str, partition: int, end: int) -> Snapshot:
    tail = await read_range(log_, topic, partition, end - 1, end)
    if len(tail) != 1:
        raise SnapshotUnusable(f"no record at offset {end - 1}, where the topic ends")
    last = tail[0]
    header = chunk_header(last)
    if header.schema != schema_fingerprint():
        raise SnapshotUnusable(f"snapshot at offset {last.offset} has schema {header.schema[:12]}, "
                               f"this build reads {schema_fingerprint()[:12]}")
    starts_at = last.offset - header.index
    if header.index != header.count - 1:
        raise _Torn(f"snapshot at offset {last.offset} is incomplete: its last chunk is "
                    f"{header.index + 1} of {header.count}", starts_at)
    chunks: dict[int, bytes] = {}
    for rec in await read_range(log_, topic, partition, starts_at, end):
        h = chunk_header(rec)
        if h.snapshot_id == header.snapshot_id and h.count == header.count:
            chunks[h.index] = rec.value or b""
    if len(chunks) != header.count:
        raise _Torn(f"snapshot {header.snapshot_id} has {len(chunks)} of its {header.count} chunks", starts_at)
    snapshot = decode_snapshot(b"".join(chunks[i] for i in range(header.count)))
    if snapshot.partition != partition or snapshot.events_offset != header.events_offset:
        raise SnapshotUnusable(f"snapshot {header.snapshot_id} says partition {snapshot.partition} at "
                               f"{snapshot.events_offset}; its records say {partition} at {header.events_offset}")
    return snapshot


# ── reading the log ──────────────────────────────────────────────────────────────────


async def replay(log_: PartitionedLog, topic: str, partition: int, start: int, end: int,
                 fold: Callable[[StoredRecord], None]) -> int:
    """Fold every record of ``topic[partition]`` in ``[start, end)`` in offset order; return how many.

    Note: ``end`` must be an exact end (``end_offset``): reading until a read comes back short is
    not an end on a broker that is still answering. Many empty reads in a row mean the log cannot
    deliver what it said it holds: ``LogUnavailable``.
    """
    if start >= end:
        return 0
    reader = log_.reader(topic)
    position, folded, empty_reads = start, 0, 0
    try:
        await reader.seek(partition, start)
        while position < end:
            records = await reader.read(max_records=_READ_BATCH, timeout=1.0)
            empty_reads = 0 if records else empty_reads + 1
            if empty_reads > _STALL_READS:
                raise LogUnavailable(f"{topic}[{partition}]: read stalled at {position}, the log said it ends at {end}")
            for rec in records:
                if rec.partition == partition and position <= rec.offset < end:
                    fold(rec)
                    position, folded = rec.offset + 1, folded + 1
    finally:
        await reader.close()
    return folded


async def read_range(log_: PartitionedLog, topic: str, partition: int, start: int, end: int) -> list[StoredRecord]:
    """The records of ``topic[partition]`` in ``[start, end)`` (fewer where a compacted topic dropped some)."""
    out: list[StoredRecord] = []
    await replay(log_, topic, partition, start, end, out.append)
    return out


async def restore_owner(log_: PartitionedLog, owner: PartitionMemory, *, events_topic: str, results_topic: str,
                        snapshots_topic: str | None) -> RestoreInfo:
    """Restore ``owner``: from its latest usable snapshot when ``snapshots_topic`` is given, else from offset 0;
    then fold ``events[p]`` and ``command-results[p]`` from where the snapshot left off to their exact ends.
    """
    started = time.perf_counter()
    p = owner.partition
    events_end = await log_.end_offset(events_topic, p)
    results_end = await log_.end_offset(results_topic, p)
    snapshot = await load_snapshot(log_, snapshots_topic, p) if snapshots_topic else None
    if snapshot is not None and (snapshot.events_offset > events_end or snapshot.results_offset > results_end):
        # The log is shorter than the snapshot: the topics were recreated; it describes another log.
        log.warning("snapshot.ignored", topic=snapshots_topic, partition=p,
                    reason=f"snapshot at events {snapshot.events_offset}, results {snapshot.results_offset} is "
                           f"past the log's end (events {events_end}, results {results_end})")
        snapshot = None
    if snapshot is not None:
        apply_snapshot(owner, snapshot)
    else:
        owner.reset()
    # Note: the collector is not held off here as a rebuild holds it (``events/collector.py``): a restore awaits the
    # log, and everything else on the event loop would run meanwhile with the collector held off and frozen.
    events = await replay(log_, events_topic, p, owner.next_offset, events_end, owner.fold_event)
    results = await replay(log_, results_topic, p, owner.results_offset, results_end, owner.fold_result)
    return RestoreInfo(p, snapshot.events_offset if snapshot else None, events, results,
                       time.perf_counter() - started)
