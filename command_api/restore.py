"""Partition snapshots and the restore of a partition owner: the latest snapshot, then the log after it.

A snapshot is what a ``PartitionOwner`` holds in memory (every stream's state and version, the
unreadable streams, the idempotency memory and the offsets it has read to), msgpack-encoded,
zlib-compressed and appended to the snapshots topic, partition for partition, as one or more
chunk records. The topic is compacted: every chunk of partition ``p`` is keyed ``p:<index>``, so
compaction keeps the latest chunk set.

A snapshot is never trusted blindly: one that is incomplete, does not decode, or was written by a
build whose snapshot schema differs (another format, another state type of any decider, another
set of event versions) is set aside with a warning, and the owner is restored from the full log.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import time
import typing
import uuid
import zlib
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import cache
from itertools import islice
from typing import Any

import msgspec
import structlog

from blackboard.command_api.owner import PartitionOwner, _Known, _Stream
from blackboard.domain.decider import Decider
from blackboard.domain.registry import DECIDERS
from blackboard.events.kafka import MAX_BATCH_BYTES
from blackboard.events.log import (
    LogUnavailable,
    PartitionedLog,
    Record,
    RecordTooLarge,
    StoredRecord,
    UnknownTopic,
)
from blackboard.schemas.api import Outcome
from blackboard.schemas.registry import EVENT_TYPES

log = structlog.get_logger(__name__)

#: The layout of an encoded snapshot. Bump it when the layout changes, and also when an ``evolve``
#: changes what it makes of the same events without changing its state type: the fingerprint
#: sees types, not code, and an old snapshot would then hold states this build would not fold to.
SNAPSHOT_FORMAT = 1
#: How the snapshots topic is created: compacted (the latest chunk set per key ``p:<index>``); the
#: compaction lag keeps the previous set readable for a while after a torn write of the next.
SNAPSHOT_TOPIC_CONFIG: dict[str, str] = {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}
#: The most recent command ids a snapshot remembers (see ``take_snapshot``).
KNOWN_WINDOW = 100_000
#: Snapshots ``load_snapshot`` looks at, the latest first, to get past torn writes.
MAX_LOOKBACK = 3
#: Bytes a record costs in a Kafka batch beyond key, value and headers (lengths, deltas, attributes).
_RECORD_OVERHEAD = 64
_READ_BATCH = 10_000
_STALL_READS = 30


class StreamState(msgspec.Struct, frozen=True, array_like=True):
    """One stream of a snapshot: its version and its decider's state (decoded with the category's state type)."""

    stream: str
    version: int
    state: Any


class KnownCommand(msgspec.Struct, frozen=True, array_like=True):
    """One entry of the idempotency memory: the first outcome of ``command_id`` and the command's fingerprint."""

    command_id: str
    fingerprint: str
    outcome: Outcome


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a partition owner holds, as of ``events_offset``/``results_offset``/``commands_offset``."""

    format: int = SNAPSHOT_FORMAT
    #: ``schema_fingerprint()`` of the build that took it; another build's snapshot is not used.
    schema: str
    partition: int
    events_offset: int
    results_offset: int
    commands_offset: int
    epoch: int
    #: The owner the last ownership marker before ``events_offset`` named.
    marked_by: str | None = None
    taken_at: datetime
    streams: list[StreamState]
    unreadable: dict[str, str]
    #: Oldest first, as the owner learnt them.
    known: list[KnownCommand]


class SnapshotInfo(msgspec.Struct, frozen=True):
    """Where a written snapshot went: ``offset`` of its first chunk in the snapshots topic, and its size."""

    partition: int
    events_offset: int
    offset: int
    chunks: int
    bytes: int
    taken_at: datetime


class RestoreInfo(msgspec.Struct, frozen=True):
    """How one owner was restored: ``from_snapshot`` is the snapshot's events offset, ``None`` from offset 0."""

    partition: int
    from_snapshot: int | None
    events_replayed: int
    results_replayed: int
    seconds: float


class SnapshotUnusable(ValueError):
    """A snapshot record set that must not be used; the message says why."""


# ── what makes a snapshot readable ──────────────────────────────────────────────────


def state_type(decider: Decider[Any, Any, Any]) -> Any:
    """The type of the states ``decider`` folds: the annotation of ``evolve``'s state parameter.

    Note: most deciders start from ``None`` (``Project | None``), so ``type(initial_state)`` would
    say ``NoneType``; it is used only when ``evolve`` carries no annotation and the initial state
    is a value.
    """
    params = list(inspect.signature(decider.evolve).parameters)
    hints = typing.get_type_hints(decider.evolve)
    if params and params[0] in hints:
        return hints[params[0]]
    if decider.initial_state is None:
        raise TypeError(f"cannot tell the state type of {decider.evolve!r}: annotate its state parameter")
    return type(decider.initial_state)


@cache
def state_types() -> dict[str, Any]:
    """Each decider category's state type."""
    return {category: state_type(d) for category, d in sorted(DECIDERS.items())}


@cache
def schema_fingerprint() -> str:
    """sha256 over what a build needs to read a snapshot: the format, every state type's JSON Schema,
    the outcome's, and every (event type, schema version) this build folds."""
    described = {
        "format": SNAPSHOT_FORMAT,
        "states": {category: msgspec.json.schema(t) for category, t in state_types().items()},
        "outcome": msgspec.json.schema(Outcome),
        "events": sorted((name, version) for name, (_, version) in EVENT_TYPES.items()),
    }
    return hashlib.sha256(msgspec.json.encode(described, order="sorted")).hexdigest()


# ── capture, encode, decode ──────────────────────────────────────────────────────────


def take_snapshot(owner: PartitionOwner, *, known_window: int = KNOWN_WINDOW) -> Snapshot:
    """A consistent capture of ``owner``; call it between two group commits (it does not await).

    Only the ``known_window`` most recent command ids are kept, so that the idempotency memory does
    not grow a snapshot without bound.

    Note: the trade-off: a repeat of a command older than the window, sent to an owner restored
    from this snapshot, is decided again instead of answered with its first outcome (the full log
    still knows it: an owner restored from offset 0 remembers every id).
    """
    recent = list(islice(reversed(owner.known.items()), known_window))
    recent.reverse()
    return Snapshot(
        schema=schema_fingerprint(), partition=owner.partition, events_offset=owner.next_offset,
        results_offset=owner.results_offset, commands_offset=owner.commands_offset, epoch=owner.epoch,
        marked_by=owner.marked_by, taken_at=owner.clock(),
        streams=[StreamState(name, s.version, s.state) for name, s in owner.streams.items()],
        unreadable=dict(owner.unreadable),
        known=[KnownCommand(cid, k.fingerprint, k.outcome) for cid, k in recent],
    )


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """msgpack, then zlib.

    Note: msgpack stores an aware datetime as an instant: it decodes in UTC (equal, not identical,
    to one written with another offset); and it has no integers beyond 64 bits, so a state holding
    one (a free-form JSON body may) raises ``OverflowError``: that partition is then restored from
    its full log until the value is gone.
    """
    return zlib.compress(msgspec.msgpack.encode(snapshot), 6)


def decode_snapshot(data: bytes) -> Snapshot:
    """The snapshot in ``data``, every state decoded with its category's state type.

    Raises ``SnapshotUnusable`` when it does not decompress or decode, or was written by another schema.
    """
    try:
        raw = msgspec.msgpack.decode(zlib.decompress(data), type=Snapshot)
    except (zlib.error, msgspec.DecodeError) as exc:
        raise SnapshotUnusable(f"does not decode: {exc}") from exc
    if raw.schema != schema_fingerprint():
        raise SnapshotUnusable(f"schema {raw.schema[:12]} is not this build's {schema_fingerprint()[:12]}")
    types = state_types()
    try:
        streams = [StreamState(s.stream, s.version, msgspec.convert(s.state, types[_category(s.stream)]))
                   for s in raw.streams]
    except (KeyError, msgspec.ValidationError) as exc:
        raise SnapshotUnusable(f"a state does not decode: {exc!r}") from exc
    return msgspec.structs.replace(raw, streams=streams)


def _category(stream: str) -> str:
    return stream.partition(":")[0]


def apply_snapshot(owner: PartitionOwner, snapshot: Snapshot) -> None:
    """Make ``owner`` hold exactly what ``snapshot`` holds (after ``owner.reset()``)."""
    if snapshot.partition != owner.partition:
        raise ValueError(f"a snapshot of partition {snapshot.partition} cannot restore partition {owner.partition}")
    owner.reset()
    owner.streams.update({s.stream: _Stream(s.state, s.version) for s in snapshot.streams})
    owner.unreadable.update(snapshot.unreadable)
    owner.known.update({k.command_id: _Known(k.fingerprint, k.outcome) for k in snapshot.known})
    owner.next_offset, owner.results_offset = snapshot.events_offset, snapshot.results_offset
    owner.commands_offset, owner.epoch = snapshot.commands_offset, snapshot.epoch
    owner.marked_by = snapshot.marked_by


# ── chunks in the snapshots topic ────────────────────────────────────────────────────


class ChunkHeader(msgspec.Struct, frozen=True):
    """What the headers of one chunk record say."""

    snapshot_id: str
    index: int
    count: int
    events_offset: int
    schema: str


def chunk_records(snapshot: Snapshot, data: bytes, *, max_record_bytes: int) -> list[Record]:
    """``data`` (the encoded ``snapshot``) cut into records whose key + value + headers fit ``max_record_bytes``."""
    snapshot_id = uuid.uuid4().hex
    widest = ChunkHeader(snapshot_id, 10**10 - 1, 10**10 - 1, snapshot.events_offset, snapshot.schema)
    room = max_record_bytes - _record_bytes(_key(snapshot.partition, widest.index), _headers(widest))
    if room <= 0:
        raise ValueError(f"max_record_bytes {max_record_bytes} leaves no room for a chunk's key and headers")
    count = max(1, math.ceil(len(data) / room))
    records = []
    for i in range(count):
        header = ChunkHeader(snapshot_id, i, count, snapshot.events_offset, snapshot.schema)
        records.append(Record(_key(snapshot.partition, i), data[i * room:(i + 1) * room], _headers(header)))
    return records


def _key(partition: int, index: int) -> bytes:
    return f"{partition}:{index}".encode()


def _headers(h: ChunkHeader) -> tuple[tuple[str, bytes], ...]:
    return (("type", b"snapshot.chunk"), ("snapshot_id", h.snapshot_id.encode()), ("chunk", str(h.index).encode()),
            ("chunks", str(h.count).encode()), ("events_offset", str(h.events_offset).encode()),
            ("schema", h.schema.encode()))


def _record_bytes(key: bytes | None, headers: Iterable[tuple[str, bytes]], value: bytes | None = None) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)


def chunk_header(rec: StoredRecord) -> ChunkHeader:
    """The chunk header of ``rec``; ``SnapshotUnusable`` when it is not a snapshot chunk."""
    h = dict(rec.headers)
    try:
        header = ChunkHeader(h["snapshot_id"].decode(), int(h["chunk"]), int(h["chunks"]),
                             int(h["events_offset"]), h["schema"].decode())
    except (KeyError, ValueError) as exc:
        raise SnapshotUnusable(f"offset {rec.offset} is not a snapshot chunk: {exc!r}") from exc
    if not 0 <= header.index < header.count:
        raise SnapshotUnusable(f"offset {rec.offset}: chunk {header.index} of {header.count}")
    return header


def batches(records: list[Record], max_batch_bytes: int) -> list[list[Record]]:
    """``records`` in order, grouped into as few batches as fit ``max_batch_bytes`` each."""
    out: list[list[Record]] = [[]]
    size = 0
    for r in records:
        cost = _record_bytes(r.key, r.headers, r.value) + _RECORD_OVERHEAD
        if out[-1] and size + cost > max_batch_bytes:
            out.append([])
            size = 0
        out[-1].append(r)
        size += cost
    return out


async def write_snapshot(log_: PartitionedLog, topic: str, snapshot: Snapshot, *, max_record_bytes: int,
                         max_batch_bytes: int = MAX_BATCH_BYTES - 65536) -> SnapshotInfo:
    """Append ``snapshot`` to ``topic`` partition ``snapshot.partition``: one append when its chunks fit one batch.

    Note: encoding runs in a thread (the states are immutable values); a batch a broker refuses as
    too large (its ``max.message.bytes`` limits whole batches) is sent again one chunk per append.
    A crash between appends leaves a torn set, which ``load_snapshot`` sets aside.
    """
    data = await asyncio.to_thread(encode_snapshot, snapshot)
    records = chunk_records(snapshot, data, max_record_bytes=max_record_bytes)
    first: int | None = None
    for batch in batches(records, max_batch_bytes):
        try:
            offset = await log_.append(topic, snapshot.partition, batch)
        except RecordTooLarge:
            if len(batch) == 1:
                raise
            offsets = [await log_.append(topic, snapshot.partition, [r]) for r in batch]
            offset = offsets[0]
        first = offset if first is None else first
    assert first is not None
    return SnapshotInfo(snapshot.partition, snapshot.events_offset, first, len(records), len(data), snapshot.taken_at)


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


async def restore_owner(log_: PartitionedLog, owner: PartitionOwner, *, events_topic: str, results_topic: str,
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
    events = await replay(log_, events_topic, p, owner.next_offset, events_end, owner.fold_event)
    results = await replay(log_, results_topic, p, owner.results_offset, results_end, owner.fold_result)
    return RestoreInfo(p, snapshot.events_offset if snapshot else None, events, results,
                       time.perf_counter() - started)

