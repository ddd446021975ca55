"""Replay of one stream: its events in log order and the command side's state after each.

The state is what the deciders' ``evolve`` makes of the events (the state the command side
decides on), not the read model: a replay shows why a command was accepted or refused at a
given version. Only the stream's partition of the events topic is read, found with the
partitioner the command side routes by.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from blackboard.domain.registry import DECIDERS
from blackboard.events.codec import UndecodableRecord, from_record
from blackboard.events.log import PartitionedLog, StoredRecord, UnknownTopic
from blackboard.events.partitioner import partition_for
from blackboard.events.skips import Skip, skip_of, takes_version
from blackboard.schemas.envelope import stream_partition_key
from blackboard.schemas.registry import UnknownEventType, decode_event
from blackboard.schemas.views import Position

#: Longest wait for the records below the end offset the replay started with.
READ_TIMEOUT_SECONDS = 30.0


class StreamNotFound(Exception):
    """The stream is malformed, of no known category, or has no event in the log."""


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the stream and the state after it.

    ``payload`` is the event as today's schema reads it (older versions upcast; ``schema_version``
    says which one was written). ``error`` says why a record of the stream was not folded (it
    does not decode, or its version is not the next); the state is then the one before it.
    """

    position: Position
    version: int
    type: str
    schema_version: int
    actor: str
    command_id: str
    occurred_at: datetime
    payload: Any
    state: Any
    error: str | None = None


class StreamReplay(msgspec.Struct, frozen=True):
    """Every event of ``stream`` on ``partition`` of ``topic``; ``version`` is the last folded one."""

    stream: str
    topic: str
    partition: int
    version: int
    events: list[Step]


class StreamState(msgspec.Struct, frozen=True):
    """The state of ``stream`` at ``version`` (0 and ``null`` before its first event).

    ``occurred_at`` is when the event that made this version happened.
    """

    stream: str
    topic: str
    partition: int
    version: int
    occurred_at: datetime | None
    state: Any


def partition_of(stream: str, partitions: int) -> int:
    """The partition the command side appends ``stream``'s events to; ``StreamNotFound`` for a bad name."""
    try:
        key = stream_partition_key(stream)
    except ValueError as exc:
        raise StreamNotFound(str(exc)) from None
    category = stream.partition(":")[0]
    if category not in DECIDERS:
        raise StreamNotFound(f"stream {stream!r}: unknown category {category!r}; known: {', '.join(sorted(DECIDERS))}")
    return partition_for(key, partitions)


def replay(stream: str, records: Iterable[StoredRecord]) -> list[Step]:
    """The steps of ``stream`` among ``records`` (one partition, in offset order), folded with ``evolve``.

    Note: like the command side's restore, it skips a record of the stream that does not decode
    or is not the next version; unlike it, it shows that record with the reason. A record ahead
    of the next version is held, as every fold holds it: once an operator's skip gives the stream
    the version before it, it is folded and shown again, at the skip, without an error.
    """
    decider = DECIDERS[stream.partition(":")[0]]
    state, version, steps = decider.initial_state, 0, []
    held: list[tuple[Step, Any]] = []  # records ahead of the next version, with their events
    for rec in records:
        skip = skip_of(rec)
        if skip is not None and skip.stream == stream:
            if takes_version(version, skip):
                version += 1
            steps.append(_skip_step(rec, skip, version, state))
            state, version = _release(decider, held, state, version, steps)
            continue
        try:
            env = from_record(rec).envelope
        except UndecodableRecord:
            continue  # no headers to tell its stream: not ours to show
        if env.stream != stream:
            continue
        payload: Any = None
        error: str | None = None
        try:
            event = decode_event(env.type, env.schema_version, env.payload)
            payload = msgspec.to_builtins(event)
        except (UnknownEventType, msgspec.DecodeError) as exc:
            error = f"undecodable: {exc}"
        if error is None and env.stream_version != version + 1:
            error = f"version {env.stream_version} is not the next version ({version + 1})"
        if error is None:
            state, version = decider.evolve(state, event), env.stream_version
        step = Step(
            position=Position(rec.partition, rec.offset), version=env.stream_version, type=env.type,
            schema_version=env.schema_version, actor=env.actor, command_id=env.command_id,
            occurred_at=env.occurred_at, payload=payload, state=msgspec.to_builtins(state), error=error,
        )
        steps.append(step)
        if error is not None and payload is not None and env.stream_version > version + 1:
            held.append((step, event))
    return steps


def _release(decider: Any, held: list[tuple[Step, Any]], state: Any, version: int,
             steps: list[Step]) -> tuple[Any, int]:
    """Fold the held records that now come next, in version order, each shown again as a step."""
    while (found := next((h for h in held if h[0].version == version + 1), None)) is not None:
        held.remove(found)
        step, event = found
        state, version = decider.evolve(state, event), step.version
        steps.append(msgspec.structs.replace(step, state=msgspec.to_builtins(state), error=None))
    return state, version


def _skip_step(rec: StoredRecord, skip: Skip, version: int, state: Any) -> Step:
    """An operator's skip of a record of the stream, as a step: the stream takes the skipped version
    when it was exactly one behind, as every fold does (``events.skips``); the state stays."""
    return Step(position=Position(rec.partition, rec.offset), version=version, type="dead_letter.skipped",
                schema_version=1, actor=skip.operator, command_id="", occurred_at=skip.skipped_at,
                payload=msgspec.to_builtins(skip), state=msgspec.to_builtins(state))


def last_version(steps: Iterable[Step]) -> int:
    """The version of the last step that was folded."""
    return max((s.version for s in steps if s.error is None), default=0)


def state_at_version(stream: str, topic: str, partition: int, steps: list[Step], version: int) -> StreamState:
    """The state once ``version`` was folded; ``StreamNotFound`` past the stream's last version."""
    last = last_version(steps)
    if not 0 <= version <= last:
        raise StreamNotFound(f"{stream} is at version {last}; it has no version {version}")
    folded = [s for s in steps if s.error is None and s.version <= version]
    return _state(stream, topic, partition, folded)


def state_at_time(stream: str, topic: str, partition: int, steps: list[Step], at: datetime) -> StreamState:
    """The state after every event that happened at or before ``at`` (a naive time is taken as UTC)."""
    folded = [s for s in steps if s.error is None and _aware(s.occurred_at) <= _aware(at)]
    return _state(stream, topic, partition, folded)


def _state(stream: str, topic: str, partition: int, folded: list[Step]) -> StreamState:
    if not folded:
        return StreamState(stream, topic, partition, 0, None, None)
    last = folded[-1]
    return StreamState(stream, topic, partition, last.version, last.occurred_at, last.state)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2025-03-01T10:00:00Z``; naive is UTC); ``ValueError`` naming the text."""
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"--at-time {text!r} is not an ISO 8601 time such as 2025-03-01T10:00:00Z") from None


def text_lines(report: StreamReplay | StreamState) -> list[str]:
    """``report`` for a terminal: one line per event and one for the state after it."""
    if isinstance(report, StreamState):
        when = "before its first event" if report.occurred_at is None else f"as of {report.occurred_at.isoformat()}"
        return [f"{report.stream} at version {report.version} ({report.topic}[{report.partition}], {when})",
                f"  state {_json(report.state)}"]
    lines = [f"{report.stream}: {len(report.events)} events in {report.topic}[{report.partition}], "
             f"version {report.version}"]
    for s in report.events:
        lines.append(f"{s.position.partition}:{s.position.offset} v{s.version} {s.occurred_at.isoformat()} {s.type}"
                     f"@{s.schema_version} actor={s.actor} cmd={s.command_id}")
        lines.append(f"  {'error  ' + s.error if s.error else 'event  ' + _json(s.payload)}")
        lines.append(f"  state  {_json(s.state)}")
    return lines


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def read_stream(log: PartitionedLog, topic: str, stream: str) -> StreamReplay:
    """Read ``stream``'s partition of ``topic`` up to its end when called, and replay the stream.

    ``StreamNotFound`` when the name is bad, the topic does not exist, or the stream has no event.
    """
    try:
        partitions = await log.partition_count(topic)
    except UnknownTopic:
        raise StreamNotFound(f"stream {stream!r}: the topic {topic!r} does not exist") from None
    partition = partition_of(stream, partitions)
    records = await read_partition(log, topic, partition)
    steps = replay(stream, records)
    if not steps:
        raise StreamNotFound(f"stream {stream!r} has no events in {topic}[{partition}]")
    return StreamReplay(stream, topic, partition, last_version(steps), steps)


async def read_partition(log: PartitionedLog, topic: str, partition: int) -> list[StoredRecord]:
    """Every record of ``topic[partition]`` below the end offset it has now, in offset order."""
    end = await log.end_offset(topic, partition)
    records: list[StoredRecord] = []
    if end == 0:
        return records
    reader = log.reader(topic)
    deadline = time.monotonic() + READ_TIMEOUT_SECONDS
    try:
        await reader.seek(partition, 0)
        next_offset = 0
        while next_offset < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: read to offset {next_offset}, not {end}, in time")
            for rec in await reader.read(max_records=5000, timeout=1.0):
                if rec.offset < end:
                    records.append(rec)
                next_offset = max(next_offset, rec.offset + 1)
    finally:
        await reader.close()
    return records
