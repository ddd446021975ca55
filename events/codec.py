"""Envelope ↔ log record: the key is the partition key, metadata rides in headers, the value is the payload.

Header values are UTF-8 text so that ``kcat -f '%h'`` and Redpanda Console show them as they are.
"""

from __future__ import annotations

from datetime import datetime

from blackboard.events.log import Record, StoredRecord
from blackboard.schemas.envelope import Envelope, RecordedEvent

CONTENT_TYPE = b"application/json"

_TEXT_FIELDS = (
    "event_id",
    "stream",
    "type",
    "command_id",
    "correlation_id",
    "causation_id",
    "actor",
    "command_hash",
)
_INT_FIELDS = ("stream_version", "schema_version", "writer_epoch")
#: Optional: events written before tracing, or without a trace, have none.
_TRACE_FIELDS = ("traceparent", "tracestate")
#: Optional: the agent that sent the command, when it said.
_AGENT_FIELDS = ("agent_run_id", "agent_model", "prompt_hash")


class UndecodableRecord(ValueError):
    """A record that is not a Blackboard event: the reason names what is missing or wrong."""


def to_record(env: Envelope) -> Record:
    """Encode an envelope as a log record."""
    headers = [(name, getattr(env, name).encode()) for name in _TEXT_FIELDS]
    headers += [(name, str(getattr(env, name)).encode()) for name in _INT_FIELDS]
    headers.append(("occurred_at", env.occurred_at.isoformat().encode()))
    headers.append(("content-type", CONTENT_TYPE))
    # W3C trace context under its standard header names, so that any Kafka consumer's tracing finds it.
    headers += [(name, value.encode()) for name in (*_TRACE_FIELDS, *_AGENT_FIELDS)
                if (value := getattr(env, name)) is not None]
    timestamp_ms = int(env.occurred_at.timestamp() * 1000)
    return Record(key=env.partition_key.encode(), value=env.payload, headers=tuple(headers), timestamp_ms=timestamp_ms)


def from_record(rec: StoredRecord) -> RecordedEvent:
    """Decode a stored record into an envelope; ``UndecodableRecord`` says why it cannot be."""
    if rec.key is None:
        raise UndecodableRecord("record has no key")
    if rec.value is None:
        raise UndecodableRecord("record has no value")
    try:
        h = {name: value.decode() for name, value in rec.headers}
    except UnicodeDecodeError as exc:
        raise UndecodableRecord(f"a header is not UTF-8: {exc}") from None
    missing = [n for n in (*_TEXT_FIELDS[:-1], *_INT_FIELDS, "occurred_at") if n not in h]
    if missing:
        raise UndecodableRecord(f"missing headers: {', '.join(missing)}")
    try:
        ints = {n: int(h[n]) for n in _INT_FIELDS}
        occurred_at = datetime.fromisoformat(h["occurred_at"])
        partition_key = rec.key.decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise UndecodableRecord(f"malformed header or key: {exc}") from None
    env = Envelope(
        event_id=h["event_id"], stream=h["stream"], type=h["type"], command_id=h["command_id"],
        correlation_id=h["correlation_id"], causation_id=h["causation_id"], actor=h["actor"],
        command_hash=h.get("command_hash", ""), stream_version=ints["stream_version"],
        schema_version=ints["schema_version"], writer_epoch=ints["writer_epoch"],
        occurred_at=occurred_at, partition_key=partition_key, payload=rec.value,
        traceparent=h.get("traceparent"), tracestate=h.get("tracestate"),
        agent_run_id=h.get("agent_run_id"), agent_model=h.get("agent_model"), prompt_hash=h.get("prompt_hash"),
    )
    return RecordedEvent(envelope=env, partition=rec.partition, offset=rec.offset)


def stream_header(rec: StoredRecord) -> str | None:
    """The record's ``stream`` header when it is readable text, whatever else is wrong with the record."""
    for name, value in rec.headers:
        if name == "stream":
            try:
                return value.decode("utf-8") or None
            except UnicodeDecodeError:
                return None
    return None
