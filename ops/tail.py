"""Reading the events topic for a person or a script: ranges, filters, and three output formats.

Everything but :func:`tail` is pure, so that what an operator sees can be tested without a log.
A record that cannot be decoded is shown with the reason, never skipped and never fatal: the
operator is usually looking for exactly that record.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from rich.markup import escape

from blackboard.events.codec import UndecodableRecord, from_record
from blackboard.events.log import PartitionedLog, StoredRecord
from blackboard.schemas.envelope import Envelope
from blackboard.schemas.registry import EVENT_TYPES, UnknownEventType, decode_event

# ── what to read ────────────────────────────────────────────────────────────────────────


class Span(msgspec.Struct, frozen=True):
    """Offsets ``start`` (inclusive) to ``stop`` (exclusive) of one partition; ``stop`` ``None``: no end."""

    partition: int
    start: int
    stop: int | None


def plan(ends: Mapping[int, int], *, partition: int | None = None, from_beginning: bool = False,
         from_offset: int | None = None, to_offset: int | None = None, follow: bool = False,
         last: int = 0) -> list[Span]:
    """The span of each partition to read, given the partitions' end offsets when the tail starts.

    Without ``from_beginning`` or ``from_offset`` the ``last`` records of each partition are read, then
    those appended from now on. Without
    ``follow`` the tail stops at the end offsets it saw at the start; ``to_offset`` stops it earlier
    (and also ends a followed tail once every partition reached it).
    """
    if partition is not None and partition not in ends:
        raise ValueError(f"partition {partition} does not exist; the topic has partitions 0..{len(ends) - 1}")
    chosen = [partition] if partition is not None else sorted(ends)
    spans = []
    for p in chosen:
        start = from_offset if from_offset is not None else (0 if from_beginning else max(0, ends[p] - last))
        stop = ends[p] if not follow else None
        if to_offset is not None:
            stop = to_offset if stop is None else min(stop, to_offset)
        spans.append(Span(p, start, stop))
    return spans


# ── decoding ────────────────────────────────────────────────────────────────────────────


class Decoded(msgspec.Struct, frozen=True):
    """One record as the tail understands it.

    ``envelope`` is ``None`` when the record is not an event at all; ``error`` says why it cannot be
    decoded (then ``payload`` may still hold the stored JSON). ``upcast`` is today's version of the
    payload when the event was written with an older schema version.
    """

    record: StoredRecord
    envelope: Envelope | None = None
    payload: Any = None
    upcast: Any = None
    current_version: int | None = None
    error: str | None = None


def decode(rec: StoredRecord) -> Decoded:
    """Decode the envelope, the stored payload, and (by schema version) today's payload of ``rec``."""
    try:
        env = from_record(rec).envelope
    except UndecodableRecord as exc:
        return Decoded(rec, error=str(exc))
    try:
        payload = msgspec.json.decode(env.payload)
    except msgspec.DecodeError as exc:
        return Decoded(rec, env, error=f"payload is not JSON: {exc}")
    known = EVENT_TYPES.get(env.type)
    current = known[1] if known else None
    try:
        event = decode_event(env.type, env.schema_version, env.payload)
    except (UnknownEventType, msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
        return Decoded(rec, env, payload, current_version=current, error=f"{type(exc).__name__}: {exc}")
    upcast = msgspec.to_builtins(event) if current is not None and env.schema_version < current else None
    return Decoded(rec, env, payload, upcast, current)


# ── which records ───────────────────────────────────────────────────────────────────────


class Filter(msgspec.Struct, frozen=True):
    """Conditions an event must all meet; ``since`` is inclusive and ``until`` exclusive, on ``occurred_at``."""

    stream: str | None = None
    type: str | None = None
    actor: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def parse_time(text: str) -> datetime:
    """An ISO-8601 time; one without a zone is taken as UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time such as 2026-01-31T12:00:00Z") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def matches(condition: Filter, item: Decoded) -> bool:
    """Whether ``item`` passes ``condition``.

    Note: a record with no readable envelope always passes, since nothing can be said against it.
    """
    env = item.envelope
    if env is None:
        return True
    equal = ((condition.stream, env.stream), (condition.type, env.type), (condition.actor, env.actor),
             (condition.correlation_id, env.correlation_id))
    if any(wanted is not None and wanted != actual for wanted, actual in equal):
        return False
    if condition.since is not None and env.occurred_at < condition.since:
        return False
    return condition.until is None or env.occurred_at < condition.until


# ── formats ─────────────────────────────────────────────────────────────────────────────


def as_json(item: Decoded) -> dict[str, Any]:
    """Partition, offset, every envelope field, the stored payload, and ``upcast`` or ``undecodable``."""
    rec = item.record
    doc: dict[str, Any] = {"partition": rec.partition, "offset": rec.offset}
    if item.envelope is not None:
        fields = msgspec.to_builtins(item.envelope)
        fields.pop("payload")
        doc.update(fields)
        doc["payload"] = item.payload
    if item.upcast is not None:
        doc["current_schema_version"] = item.current_version
        doc["upcast"] = item.upcast
    if item.error is not None:
        doc["undecodable"] = item.error
        if item.envelope is None:
            doc.update(timestamp_ms=rec.timestamp_ms, key=_bytes(rec.key), value=_bytes(rec.value))
    return doc


def as_raw(rec: StoredRecord) -> dict[str, Any]:
    """The record's key, headers and value as they sit in the log: text when UTF-8, else base64."""
    return {"partition": rec.partition, "offset": rec.offset, "timestamp_ms": rec.timestamp_ms,
            "key": _bytes(rec.key), "headers": [[name, _bytes(value)] for name, value in rec.headers],
            "value": _bytes(rec.value)}


def _bytes(raw: bytes | None) -> dict[str, str] | None:
    if raw is None:
        return None
    try:
        return {"encoding": "text", "data": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"encoding": "base64", "data": base64.b64encode(raw).decode("ascii")}


def as_text(item: Decoded) -> str:
    """One line of rich markup; undecodable records in red with the reason, upcasts on a second line."""
    rec, env = item.record, item.envelope
    where = f"[dim]{rec.partition}:{rec.offset}[/]"
    if env is None:
        return f"{where} [red]undecodable: {escape(item.error or '')}[/]"
    line = (f"{where} {env.occurred_at:%Y-%m-%d %H:%M:%S} [bold]{escape(env.stream)}[/]@{env.stream_version} "
            f"[cyan]{escape(env.type)}[/] v{env.schema_version} actor={escape(env.actor)} "
            f"cmd={escape(env.command_id)} corr={escape(env.correlation_id)} {escape(_compact(item.payload))}")
    if item.error is not None:
        return f"{line}\n  [red]undecodable: {escape(item.error)}[/]"
    if item.upcast is not None:
        line += f"\n  [yellow]↑ as v{item.current_version}:[/] {escape(_compact(item.upcast))}"
    return line


def _compact(value: Any) -> str:
    return msgspec.json.encode(value).decode()


# ── reading ─────────────────────────────────────────────────────────────────────────────

#: One record out: the raw record and its decoding (the format chooses which to show).
Emit = Callable[[Decoded], None]


async def tail(log: PartitionedLog, topic: str, spans: list[Span], condition: Filter, emit: Emit, *,
               poll_seconds: float = 1.0) -> int:
    """Read ``spans`` of ``topic`` and ``emit`` each record that passes ``condition``; return how many.

    Returns when every span with a stop has reached it and no span is open-ended (a followed tail
    without ``to_offset`` runs until cancelled).
    """
    reader = log.reader(topic)
    todo = {s.partition: s for s in spans if s.stop is None or s.start < s.stop}
    emitted = 0
    try:
        for span in todo.values():
            await reader.seek(span.partition, span.start)
        while todo:
            emitted += _emit_batch(await reader.read(max_records=1000, timeout=poll_seconds), todo, condition, emit)
            for p in [p for p, s in todo.items() if s.stop is not None and s.start >= s.stop]:
                del todo[p]
    finally:
        await reader.close()
    return emitted


def _emit_batch(records: list[StoredRecord], todo: dict[int, Span], condition: Filter, emit: Emit) -> int:
    emitted = 0
    for rec in records:
        span = todo.get(rec.partition)
        if span is None or (span.stop is not None and rec.offset >= span.stop):
            continue
        item = decode(rec)
        if matches(condition, item):
            emit(item)
            emitted += 1
        if span.stop is not None and rec.offset + 1 >= span.stop:
            todo[rec.partition] = Span(rec.partition, span.stop, span.stop)
    return emitted
