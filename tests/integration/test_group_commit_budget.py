"""A group commit larger than the log's batch budget is split into batches within it, never refused.

The budget is the Kafka log's ``max_batch_bytes`` (the producer's largest batch; every topic's
``max.message.bytes`` is above it). Here it is small, so that a group of a few dozen commands already
exceeds it: the owner must cut the group between commands, keeping each command's events together.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import msgspec
import pytest

from blackboard.command_api.owner import PartitionOwner, Submission, submission
from blackboard.command_api.restore import restore_owner
from blackboard.domain.decoding import validate_command
from blackboard.events.kafka import KafkaLog
from blackboard.events.log import BATCH_OVERHEAD, batched_bytes, fitting, split_to_fit
from blackboard.events.log import Record as LogRecord
from blackboard.schemas.api import Accepted
from tests.integration.harness import read_events

BUDGET = 64 * 1024
COMMANDS = 40
BODY = "x" * 6000  # each command's event: ~6 KB, so about ten fit one batch


@pytest.fixture
async def small_batches(kafka_bootstrap: str) -> AsyncIterator[KafkaLog]:
    log = KafkaLog(kafka_bootstrap, max_batch_bytes=BUDGET)
    await log.start()
    yield log
    await log.close()


def _submission(i: int) -> Submission:
    cid = uuid.uuid4().hex
    body = {"type": "doc.create", "stream": f"doc:notes.n-{i}", "command_id": cid,
            "payload": {"body": {"text": BODY, "i": i}}}
    valid = validate_command(msgspec.json.encode(body))
    # As if it came through the commands topic: its outcome is published too, so the results are large as well.
    return submission(valid.request, valid.payload, actor="alice", fingerprint=valid.fingerprint, source_offset=i)


async def test_a_group_over_the_budget_is_appended_in_batches_within_it(small_batches: KafkaLog) -> None:
    prefix = f"b{uuid.uuid4().hex[:8]}."
    events, results = f"{prefix}events", f"{prefix}command-results"
    for topic in (events, results):
        await small_batches.create_topic(topic, 1)
    owner = PartitionOwner(small_batches, events_topic=events, results_topic=results, partition=0)
    subs = [_submission(i) for i in range(COMMANDS)]
    for sub in subs:  # queued before the owner starts: one group of them all
        owner.queue.put_nowait(sub)

    async def restore(o: PartitionOwner) -> None:
        await restore_owner(small_batches, o, events_topic=events, results_topic=results, snapshots_topic=None)

    owner.start(restore)
    try:
        outcomes = [await sub.future for sub in subs]
    finally:
        await owner.stop()
    assert all(isinstance(o, Accepted) and not replayed for o, replayed in outcomes), outcomes
    logged = await read_events(small_batches, events)
    assert sorted(e.envelope.command_id for e in logged) == sorted(s.command_id for s in subs)
    # The group really was over the budget: one batch of it all would have been refused.
    assert sum(len(msgspec.json.encode(e.envelope)) for e in logged) > 2 * BUDGET
    assert await small_batches.end_offset(results, 0) == COMMANDS, "every outcome, over several batches"


def test_fitting_keeps_a_part_whole_and_never_returns_zero() -> None:
    assert fitting([10, 10, 10], BATCH_OVERHEAD + 20) == 2
    assert fitting([10, 10], BATCH_OVERHEAD + 100) == 2
    assert fitting([500, 10], BATCH_OVERHEAD + 100) == 1  # too large alone: still sent alone (and refused alone)


def test_split_to_fit_keeps_the_order_and_each_batch_within_the_budget() -> None:
    records = [LogRecord(key=b"k", value=bytes(100 + i)) for i in range(50)]
    budget = 1000
    parts = split_to_fit(records, budget)
    assert [r for part in parts for r in part] == records and len(parts) > 1
    assert all(BATCH_OVERHEAD + batched_bytes(part) <= budget for part in parts)
    assert split_to_fit(records, None) == [records]
