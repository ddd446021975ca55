"""Partition snapshots: what a partition owner holds, captured, encoded and written in chunks.

A snapshot is what a ``PartitionOwner`` holds in memory (every stream's state and version, the
unreadable streams, the idempotency memory and the offsets it has read to), msgpack-encoded,
zlib-compressed and appended to the snapshots topic, partition for partition, as one or more
chunk records. The topic is compacted: every chunk of partition ``p`` is keyed ``p:<index>``, so
compaction keeps the latest chunk set. Reading them back is ``command_api.restore``'s.

A snapshot is never trusted blindly: one that is incomplete, does not decode, or was written by a
build whose snapshot schema differs (another format, another state type of any decider, another
set of event versions) is set aside with a warning, and the owner is restored from the full log.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
import typing
import uuid
import zlib
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from itertools import islice
from typing import Any

import msgspec

from blackboard.command_api.memory import Held, Known, PartitionMemory
from blackboard.domain.decider import Decider
from blackboard.domain.registry import DECIDERS
from blackboard.events.kafka import MAX_BATCH_BYTES
from blackboard.events.log import PartitionedLog, Record, RecordTooLarge, StoredRecord
from blackboard.schemas.api import Outcome
from blackboard.schemas.registry import EVENT_TYPES

#: The layout of an encoded snapshot. Bump it when the layout changes, and also when an ``evolve``
#: changes what it makes of the same events without changing its state type: the fingerprint
#: sees types, not code, and an old snapshot would then hold states this build would not fold to.
SNAPSHOT_FORMAT = 1
#: How the snapshots topic is created: compacted (the latest chunk set per key ``p:<index>``); the
#: compaction lag keeps the previous set readable for a while after a torn write of the next.
SNAPSHOT_TOPIC_CONFIG: dict[str, str] = {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}
#: Bytes a record costs in a Kafka batch beyond key, value and headers (lengths, deltas, attributes).
_RECORD_OVERHEAD = 64



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
    #: The records held behind each unreadable stream's hole (folded again when an operator skips it).
    held: dict[str, list[StoredRecord]] = {}
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


def take_snapshot(owner: PartitionMemory, *, known_window: int | None = None) -> Snapshot:
    """A consistent capture of ``owner``; call it between two group commits (it does not await).

    The idempotency memory is taken as the owner holds it (it is bounded: ``command_api.known``), so
    an owner restored from the snapshot remembers what the live one did; ``known_window`` keeps only
    that many of the most recent command ids instead.
    """
    window = len(owner.known) if known_window is None else known_window
    recent = list(islice(reversed(owner.known.items()), window))
    recent.reverse()
    return Snapshot(
        schema=schema_fingerprint(), partition=owner.partition, events_offset=owner.next_offset,
        results_offset=owner.results_offset, commands_offset=owner.commands_offset, epoch=owner.epoch,
        marked_by=owner.marked_by, taken_at=owner.clock(),
        streams=[StreamState(name, s.version, s.state) for name, s in owner.streams.items()],
        unreadable=dict(owner.unreadable), held={stream: list(recs) for stream, recs in owner.held.items()},
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


def apply_snapshot(owner: PartitionMemory, snapshot: Snapshot) -> None:
    """Make ``owner`` hold exactly what ``snapshot`` holds (after ``owner.reset()``)."""
    if snapshot.partition != owner.partition:
        raise ValueError(f"a snapshot of partition {snapshot.partition} cannot restore partition {owner.partition}")
    owner.reset()
    owner.streams.update({s.stream: Held(s.state, s.version) for s in snapshot.streams})
    owner.unreadable.update(snapshot.unreadable)
    owner.held.update({stream: list(recs) for stream, recs in snapshot.held.items()})
    owner.known.update({k.command_id: Known(k.fingerprint, k.outcome) for k in snapshot.known})
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
