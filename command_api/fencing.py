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

from blackboard.command_api.metrics import FENCED_WRITES
from blackboard.command_api.results import StoredOutcome
from blackboard.events.codec import fenced, ownership_marker, to_record
from blackboard.events.log import (
    BATCH_OVERHEAD,
    OffsetConflict,
    PartitionedLog,
    Record,
    batched_bytes,
    fitting,
    split_to_fit,
)
from blackboard.events.tracing import distinct
from blackboard.schemas.envelope import Envelope, stream_partition_key

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)


def event_records(envelopes: list[Envelope], at: int) -> list[Record]:
    """A group's events as the records of one batch, fenced to land at offset ``at``."""
    return fenced([to_record(e) for e in envelopes], at)


def cut_to_fit(log_: PartitionedLog, records: list[Record], counts: list[int]) -> int:
    """Where to cut a group whose events (``counts`` of ``records`` per command) exceed the log's batch
    budget (a broker would refuse the batch), keeping each command's events together; 0 when they fit.

    Note: each part is then all-or-none, and so still each command.
    """
    budget: int | None = getattr(log_, "max_batch_bytes", None)
    if budget is None or len(counts) < 2 or BATCH_OVERHEAD + batched_bytes(records) <= budget:
        return 0
    sizes, at = [], 0
    for n in counts:
        sizes.append(batched_bytes(records[at:at + n]))
        at += n
    return fitting(sizes, budget)


async def append_events(log_: PartitionedLog, topic: str, partition: int, records: list[Record], at: int) -> int:
    """Append ``records`` (``event_records``) as one batch where the writer's state ends (``at``); the offset
    of the first.

    Note: refusals and no-ops append no event, so no append can fence them: with no record, check
    instead that no other writer has moved the partition since the state was built.
    """
    if not records:
        end = await log_.end_offset(topic, partition)
        if end != at:
            raise OffsetConflict(topic, partition, at, end, appended=False)
        return at
    try:
        return await log_.append(topic, partition, records, expected_offset=at)
    except OffsetConflict:
        # Another writer appended: we are not (or no longer) the only owner. Never acknowledge.
        log.error("owner.fenced", partition=partition, expected=at)
        FENCED_WRITES.labels(str(partition)).inc()
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
    # Outcomes are independent of each other: a group's may take several batches, each within the budget.
    end = 0
    for part in split_to_fit(records, getattr(log_, "max_batch_bytes", None)):
        end = await log_.append(topic, partition, part) + len(part)
    return end


async def append_marker(log_: PartitionedLog, topic: str, partition: int, *, member: str, epoch: int, at: int,
                        now: datetime) -> None:
    """Mark ``topic[partition]`` at ``at``: from here on ``member`` writes it, at ``epoch``.

    Raises ``OffsetConflict`` when another writer appended after ``at`` (the marker then lands
    elsewhere and every fold passes over it).
    """
    record = fenced([ownership_marker(member, epoch, now)], at)
    try:
        await log_.append(topic, partition, record, expected_offset=at)
    except OffsetConflict:
        FENCED_WRITES.labels(str(partition)).inc()
        raise


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
