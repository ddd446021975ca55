"""Events as the log holds them, built for tests: envelope → record → stored record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from blackboard.events.codec import to_record
from blackboard.events.log import Record, StoredRecord
from blackboard.schemas.envelope import Envelope, stream_partition_key
from blackboard.schemas.registry import encode_payload, event_name, schema_version_of

OCCURRED_AT = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def envelope(event: msgspec.Struct, *, stream: str, version: int, **overrides: Any) -> Envelope:
    """The envelope a decider would write for ``event`` as version ``version`` of ``stream``.

    ``overrides`` replace any envelope field (``event_id``, ``type``, ``schema_version``, ``payload``…).
    """
    name = event_name(event)
    fields: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "stream": stream,
        "stream_version": version,
        "type": name,
        "schema_version": schema_version_of(name),
        "occurred_at": OCCURRED_AT,
        "command_id": f"cmd-{uuid.uuid4()}",
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
        "actor": "tester",
        "writer_epoch": 1,
        "partition_key": stream_partition_key(stream),
        "payload": encode_payload(event),
    }
    return Envelope(**(fields | overrides))


def stored(record: Record, *, topic: str, partition: int, offset: int) -> StoredRecord:
    """``record`` as a reader returns it from ``topic[partition]`` at ``offset``."""
    return StoredRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        key=record.key,
        value=record.value,
        headers=record.headers,
        timestamp_ms=record.timestamp_ms or 0,
    )


class Partition:
    """Stored records of one partition, offsets handed out densely from ``start``."""

    def __init__(self, topic: str, partition: int, start: int = 0) -> None:
        self.topic, self.partition, self.next_offset = topic, partition, start
        self.records: list[StoredRecord] = []

    def add(self, record: Record) -> StoredRecord:
        """Append a raw record (possibly a malformed one)."""
        rec = stored(record, topic=self.topic, partition=self.partition, offset=self.next_offset)
        self.next_offset += 1
        self.records.append(rec)
        return rec

    def event(self, event: msgspec.Struct, *, stream: str, version: int, **overrides: Any) -> StoredRecord:
        """Append ``event`` as version ``version`` of ``stream``."""
        return self.add(to_record(envelope(event, stream=stream, version=version, **overrides)))
