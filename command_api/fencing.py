"""The owner's writes: a group's events as one fenced batch, its results, and the ownership marker.

Every write to ``events[partition]`` is fenced: it names the offset the writer's state ends at, and
the log refuses it (``OffsetConflict``) when another writer appended meanwhile, so a writer that
lost its partition without knowing it never gets a batch acknowledged.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime

import msgspec
import structlog
from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind

from blackboard.command_api.results import StoredOutcome
from blackboard.events.codec import fenced, ownership_marker, to_record
from blackboard.events.log import OffsetConflict, PartitionedLog, Record
from blackboard.events.tracing import distinct
from blackboard.schemas.envelope import Envelope, stream_partition_key

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)


async def append_events(log_: PartitionedLog, topic: str, partition: int, envelopes: list[Envelope],
                        at: int) -> int:
    """Append ``envelopes`` as one batch where the writer's state ends (``at``); the offset of the first.

    Note: refusals and no-ops append no event, so no append can fence them: with no envelope, check
    instead that no other writer has moved the partition since the state was built.
    """
    if not envelopes:
        end = await log_.end_offset(topic, partition)
        if end != at:
            raise OffsetConflict(topic, partition, at, end, appended=False)
        return at
    records = fenced([to_record(e) for e in envelopes], at)
    try:
        return await log_.append(topic, partition, records, expected_offset=at)
    except OffsetConflict:
        # Another writer appended: we are not (or no longer) the only owner. Never acknowledge.
        log.error("owner.fenced", partition=partition, expected=at)
        raise


async def append_results(log_: PartitionedLog, topic: str, partition: int, results: list[StoredOutcome]) -> int | None:
    """Append ``results`` to the command-results topic; one past the last offset, ``None`` when there were none."""
    if not results:
        return None
    records = [
        Record(key=stream_partition_key(r.stream).encode(), value=msgspec.json.encode(r),
               headers=(("type", b"command.outcome"), ("command_id", r.command_id.encode())))
        for r in results
    ]
    return await log_.append(topic, partition, records) + len(records)


async def append_marker(log_: PartitionedLog, topic: str, partition: int, *, member: str, epoch: int, at: int,
                        now: datetime) -> None:
    """Mark ``topic[partition]`` at ``at``: from here on ``member`` writes it, at ``epoch``.

    Raises ``OffsetConflict`` when another writer appended after ``at`` (the marker then lands
    elsewhere and every fold passes over it).
    """
    record = fenced([ownership_marker(member, epoch, now)], at)
    await log_.append(topic, partition, record, expected_offset=at)


def append_span(log_: PartitionedLog, topic: str, partition: int, *, traces: Sequence[OtelContext | None],
                writers: Sequence[SpanContext], events: int) -> AbstractContextManager[Span]:
    """The span of one group commit: a child of the first writer's decide span, linked to the others'.

    Note: one append carries the events of several commands, each of its own trace; the span
    lives in one of them and links to the rest, as a batch publish does in messaging.
    """
    contexts = distinct(writers)
    parent = trace.set_span_in_context(NonRecordingSpan(contexts[0])) if contexts else traces[0]
    return tracer.start_as_current_span(
        f"append {topic}", context=parent, kind=SpanKind.PRODUCER,
        links=[Link(c) for c in contexts[1:]],
        attributes={"messaging.system": log_.engine, "messaging.destination.name": topic,
                    "messaging.destination.partition.id": str(partition),
                    "messaging.batch.message_count": events, "blackboard.commands": len(traces)},
    )
