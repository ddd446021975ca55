"""Envelope ↔ log record: the key is the partition key, metadata rides in headers, the value is the payload.

Header values are UTF-8 text so that ``kcat -f '%h'`` and Redpanda Console show them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

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

#: The header of a record that says at which offset its writer expected it (see ``passed_over``).
EXPECTED_OFFSET = "expected_offset"
#: The ``type`` header of an ownership marker: a new owner of a partition says so in the log.
OWNERSHIP_MARKER = "ownership.claimed"
#: The ``type`` header of an operator's skip: a record every fold gives up on, from here on (``events.skips``).
SKIP_MARKER = "dead_letter.skipped"
#: The same ``type`` headers as stored (bytes), encoded once: every fold compares every record's with them.
OWNERSHIP_MARKER_TYPE = OWNERSHIP_MARKER.encode()
SKIP_MARKER_TYPE = SKIP_MARKER.encode()


class UndecodableRecord(ValueError):
    """A record that is not a Blackboard event: the reason names what is missing or wrong."""


class PassedOver(UndecodableRecord):
    """A record every fold passes over: a control record or a fenced write (see ``passed_over``)."""


class OwnershipMarker(msgspec.Struct, frozen=True):
    """What an ownership marker says: from here on, ``owner`` writes this partition at ``epoch``."""

    owner: str
    epoch: int
    claimed_at: datetime


def fenced(records: Sequence[Record], expected_offset: int) -> list[Record]:
    """``records`` stamped with the offset each must land at, when their batch lands at ``expected_offset``.

    Note: this is the fence every fold applies (``passed_over``): a batch is valid only where its
    writer expected it, i.e. right after every record its decisions were based on. A writer that
    lost its partition without knowing it (a zombie) appends after records it never saw, so its
    batch lands elsewhere and every reader passes over it, the same way, from the record alone.
    """
    return [msgspec.structs.replace(r, headers=(*r.headers, (EXPECTED_OFFSET, str(expected_offset + i).encode())))
            for i, r in enumerate(records)]


def ownership_marker(owner: str, epoch: int, at: datetime) -> Record:
    """The record a new owner appends (fenced, like its events) before it decides anything."""
    body = OwnershipMarker(owner, epoch, at)
    return Record(key=None, value=msgspec.json.encode(body),
                  headers=(("type", OWNERSHIP_MARKER.encode()), ("writer_epoch", str(epoch).encode()),
                           ("content-type", CONTENT_TYPE)))


def marker_of(rec: StoredRecord) -> OwnershipMarker | None:
    """The ownership marker ``rec`` is, or ``None``."""
    kind = None
    for name, value in rec.headers:  # the last ``type`` header, as a dict of the headers would keep
        if name == "type":
            kind = value
    if kind != OWNERSHIP_MARKER_TYPE:
        return None
    try:
        return msgspec.json.decode(rec.value or b"", type=OwnershipMarker)
    except msgspec.DecodeError:
        return None


def passed_over(rec: StoredRecord) -> str | None:
    """Why every fold passes over ``rec`` without applying it, or ``None`` when it is to be folded.

    Two kinds of record are passed over: control records, not events (ownership markers, an
    operator's skip of a dead letter: ``events.skips``), and records that did not land at the
    offset their writer expected (a fenced write: see ``fenced``).
    The decision needs nothing but the record, so the command side's restore, the projectors,
    the process managers and any user's consumer that starts anywhere in the log agree on it.
    """
    expected = None
    for name, value in rec.headers:
        if name == EXPECTED_OFFSET:
            expected = value
        elif name == "type" and value == OWNERSHIP_MARKER_TYPE:
            return "ownership marker"
        elif name == "type" and value == SKIP_MARKER_TYPE:
            return "skip of a dead letter"
    if expected is not None and expected != str(rec.offset).encode():
        return f"fenced: written for offset {expected.decode('ascii', 'replace')}, landed at {rec.offset}"
    return None


def to_record(env: Envelope, *, expected_offset: int | None = None) -> Record:
    """Encode an envelope as a log record; with ``expected_offset``, fenced to land there (as ``fenced`` does).

    Note: the headers in the order of ``_TEXT_FIELDS``, ``_INT_FIELDS``, ``occurred_at``, ``content-type``, then
    the optional ones (the trace context: none in events written before tracing, or without a trace; the agent
    that sent the command, when it said; the sender's tenant: none in events written before tenants) and the
    fence, written out field by field: every event appended comes through here.
    """
    headers = [
        ("event_id", env.event_id.encode()), ("stream", env.stream.encode()), ("type", env.type.encode()),
        ("command_id", env.command_id.encode()), ("correlation_id", env.correlation_id.encode()),
        ("causation_id", env.causation_id.encode()), ("actor", env.actor.encode()),
        ("command_hash", env.command_hash.encode()),
        ("stream_version", str(env.stream_version).encode()), ("schema_version", str(env.schema_version).encode()),
        ("writer_epoch", str(env.writer_epoch).encode()),
        ("occurred_at", env.occurred_at.isoformat().encode()), ("content-type", CONTENT_TYPE),
    ]
    # W3C trace context under its standard header names, so that any Kafka consumer's tracing finds it.
    if env.traceparent is not None:
        headers.append(("traceparent", env.traceparent.encode()))
    if env.tracestate is not None:
        headers.append(("tracestate", env.tracestate.encode()))
    if env.agent_run_id is not None:
        headers.append(("agent_run_id", env.agent_run_id.encode()))
    if env.agent_model is not None:
        headers.append(("agent_model", env.agent_model.encode()))
    if env.prompt_hash is not None:
        headers.append(("prompt_hash", env.prompt_hash.encode()))
    if env.tenant is not None:
        headers.append(("tenant", env.tenant.encode()))
    if expected_offset is not None:
        headers.append((EXPECTED_OFFSET, str(expected_offset).encode()))
    timestamp_ms = int(env.occurred_at.timestamp() * 1000)
    return Record(key=env.partition_key.encode(), value=env.payload, headers=tuple(headers), timestamp_ms=timestamp_ms)


def from_record(rec: StoredRecord) -> RecordedEvent:
    """Decode a stored record into an envelope; ``UndecodableRecord`` says why it cannot be.

    A record that every fold passes over raises ``PassedOver`` (a kind of ``UndecodableRecord``),
    so that no reader applies a fenced write by mistake.

    Note: every event of a rebuild comes through here, so the well-formed record takes a short
    path (one pass over the headers, no checks that cannot fail for it); anything that trips it
    is decoded again by ``_checked_from_record``, which finds and names what is wrong.
    """
    try:
        h = {name: value.decode() for name, value in rec.headers}
        expected = h.get(EXPECTED_OFFSET)
        if (h.get("type") in (OWNERSHIP_MARKER, SKIP_MARKER) or (expected is not None and expected != str(rec.offset))
                or rec.value is None or rec.key is None):
            return _checked_from_record(rec)  # passed over, or not an event: it says which
        env = Envelope(
            event_id=h["event_id"], stream=h["stream"], type=h["type"], command_id=h["command_id"],
            correlation_id=h["correlation_id"], causation_id=h["causation_id"], actor=h["actor"],
            command_hash=h.get("command_hash", ""), stream_version=int(h["stream_version"]),
            schema_version=int(h["schema_version"]), writer_epoch=int(h["writer_epoch"]),
            occurred_at=datetime.fromisoformat(h["occurred_at"]), partition_key=rec.key.decode(), payload=rec.value,
            traceparent=h.get("traceparent"), tracestate=h.get("tracestate"), agent_run_id=h.get("agent_run_id"),
            agent_model=h.get("agent_model"), prompt_hash=h.get("prompt_hash"), tenant=h.get("tenant"),
        )
    except (KeyError, ValueError):  # a missing header; bad UTF-8, an integer or a time that does not parse
        return _checked_from_record(rec)
    return RecordedEvent(envelope=env, partition=rec.partition, offset=rec.offset)


def _checked_from_record(rec: StoredRecord) -> RecordedEvent:
    """``from_record`` one check at a time, so that a malformed record says exactly what is wrong."""
    reason = passed_over(rec)
    if reason is not None:
        raise PassedOver(reason)
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
        tenant=h.get("tenant"),
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
