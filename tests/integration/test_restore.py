"""Restoring a partition owner from a snapshot plus the log after it, on every log engine.

An owner decides real commands (validated as HTTP does) on a real log; owners restored from its
snapshot and the tail must hold exactly what an owner restored from the whole log holds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from benchmarks.restore import measure
from blackboard.command_api.owner import PartitionOwner, submission
from blackboard.command_api.restore import load_snapshot, restore_owner
from blackboard.command_api.snapshots import (
    SNAPSHOT_TOPIC_CONFIG,
    chunk_records,
    encode_snapshot,
    take_snapshot,
    write_snapshot,
)
from blackboard.domain.decoding import validate_command
from blackboard.events.log import PartitionedLog
from blackboard.schemas.api import Accepted, DryRun, Outcome, Rejected


class Topics(msgspec.Struct, frozen=True):
    events: str
    results: str
    snapshots: str


@pytest.fixture
async def topics(log: PartitionedLog) -> Topics:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    t = Topics(f"{prefix}events", f"{prefix}command-results", f"{prefix}snapshots")
    await log.create_topic(t.events, 1)
    await log.create_topic(t.results, 1)
    await log.create_topic(t.snapshots, 1, config=SNAPSHOT_TOPIC_CONFIG)
    return t


def new_owner(log: PartitionedLog, t: Topics) -> PartitionOwner:
    return PartitionOwner(log, events_topic=t.events, results_topic=t.results, partition=0)


async def restored(log: PartitionedLog, t: Topics, snapshots: str | None) -> tuple[PartitionOwner, int | None]:
    o = new_owner(log, t)
    info = await restore_owner(log, o, events_topic=t.events, results_topic=t.results, snapshots_topic=snapshots)
    return o, info.from_snapshot


async def send(o: PartitionOwner, type_: str, stream: str, payload: dict[str, Any]) -> Outcome:
    cid = uuid.uuid4().hex
    body = {"type": type_, "stream": stream, "command_id": cid, "payload": payload}
    valid = validate_command(msgspec.json.encode(body))
    sub = submission(valid.request, valid.payload, actor="alice", fingerprint=valid.fingerprint)
    await o.queue.put(sub)
    outcome, _ = await sub.future
    assert not isinstance(outcome, DryRun)
    return outcome


async def decide_some(o: PartitionOwner, round_: int) -> None:
    """Accepted commands of several categories, and rejections (which only the results topic keeps)."""
    outcomes = []
    for i in range(3):
        if round_ == 0:
            outcomes.append(await send(o, "project.create", f"project:p-{i}",
                                       {"title": f"P {i}", "currency": "EUR", "budget_total": "100.00"}))
        outcomes.append(await send(o, "project.add_cost", f"project:p-{i}",
                                   {"amount": "30.00", "reason": f"render {round_}"}))
    outcomes.append(await send(o, "doc.create", f"doc:notes.n-{round_}", {"body": {"score": round_, "tags": ["ok"]}}))
    outcomes.append(await send(o, "task.create", f"task:t-{round_}",
                               {"name": "render", "priority": 2, "payload": {"f": 1}}))
    assert all(isinstance(out, Accepted) for out in outcomes), outcomes
    refused = await send(o, "project.add_cost", "project:p-0", {"amount": "1000.00", "reason": "too much"})
    assert isinstance(refused, Rejected)


@pytest.fixture
async def writer(log: PartitionedLog, topics: Topics) -> AsyncIterator[PartitionOwner]:
    """A serving owner; stopped at the end."""
    o = new_owner(log, topics)

    async def restore(owner: PartitionOwner) -> None:
        await restore_owner(log, owner, events_topic=topics.events, results_topic=topics.results,
                            snapshots_topic=topics.snapshots)

    o.start(restore)
    yield o
    await o.stop()


def assert_same(a: PartitionOwner, b: PartitionOwner, *, restored: bool = True) -> None:
    """Same streams, memory and offsets; with ``restored`` (both came out of a restore) the same epoch too.

    Note: the serving owner keeps the epoch it writes at; a restore of its events sets the next one.
    """
    assert a.streams == b.streams
    assert a.known == b.known
    assert a.unreadable == b.unreadable
    assert (a.next_offset, a.results_offset, a.commands_offset, a.marked_by) == (
        b.next_offset, b.results_offset, b.commands_offset, b.marked_by)
    if restored:
        assert a.epoch == b.epoch


async def test_a_snapshot_and_its_tail_restore_what_the_full_log_restores(
        log: PartitionedLog, topics: Topics, writer: PartitionOwner) -> None:
    await decide_some(writer, 0)
    info = await write_snapshot(log, topics.snapshots, take_snapshot(writer), max_record_bytes=1_048_576)
    await decide_some(writer, 1)

    from_snapshot, at = await restored(log, topics, topics.snapshots)
    full, none = await restored(log, topics, None)
    assert (at, none) == (info.events_offset, None)
    assert_same(from_snapshot, full)
    assert_same(from_snapshot, writer, restored=False)
    assert len(full.known) == 9 + 6 and any(s.startswith("doc:") for s in full.streams)


async def test_a_snapshot_in_many_chunks_restores_the_same(
        log: PartitionedLog, topics: Topics, writer: PartitionOwner) -> None:
    await decide_some(writer, 0)
    info = await write_snapshot(log, topics.snapshots, take_snapshot(writer), max_record_bytes=700,
                                max_batch_bytes=3000)
    await decide_some(writer, 1)
    assert info.chunks > 3
    from_snapshot, at = await restored(log, topics, topics.snapshots)
    assert at == info.events_offset
    assert_same(from_snapshot, (await restored(log, topics, None))[0])


async def test_a_snapshot_of_another_schema_is_ignored(
        log: PartitionedLog, topics: Topics, writer: PartitionOwner) -> None:
    await decide_some(writer, 0)
    older = msgspec.structs.replace(take_snapshot(writer), schema="0" * 64)
    await write_snapshot(log, topics.snapshots, older, max_record_bytes=1_048_576)
    await decide_some(writer, 1)

    assert await load_snapshot(log, topics.snapshots, 0) is None
    from_snapshot, at = await restored(log, topics, topics.snapshots)
    assert at is None
    assert_same(from_snapshot, (await restored(log, topics, None))[0])


async def test_a_partial_snapshot_is_passed_over(log: PartitionedLog, topics: Topics, writer: PartitionOwner) -> None:
    await decide_some(writer, 0)
    complete = await write_snapshot(log, topics.snapshots, take_snapshot(writer), max_record_bytes=1_048_576)
    await decide_some(writer, 1)
    torn = take_snapshot(writer)
    first, *rest = chunk_records(torn, encode_snapshot(torn), max_record_bytes=700)
    assert rest
    await log.append(topics.snapshots, 0, [first])  # the writer died after its first chunk

    from_snapshot, at = await restored(log, topics, topics.snapshots)
    assert at == complete.events_offset  # the complete one before the torn one
    assert_same(from_snapshot, (await restored(log, topics, None))[0])


async def test_a_lone_partial_snapshot_is_ignored(log: PartitionedLog, topics: Topics,
                                                  writer: PartitionOwner) -> None:
    await decide_some(writer, 0)
    torn = take_snapshot(writer)
    first, *_ = chunk_records(torn, encode_snapshot(torn), max_record_bytes=700)
    await log.append(topics.snapshots, 0, [first])
    assert await load_snapshot(log, topics.snapshots, 0) is None
    from_snapshot, at = await restored(log, topics, topics.snapshots)
    assert at is None
    assert_same(from_snapshot, writer, restored=False)


async def test_without_a_snapshots_topic_the_restore_reads_the_full_log(
        log: PartitionedLog, topics: Topics, writer: PartitionOwner) -> None:
    await decide_some(writer, 0)
    from_snapshot, at = await restored(log, topics, f"{topics.snapshots}-missing")
    assert at is None
    assert_same(from_snapshot, writer, restored=False)


async def test_the_restore_bench_runs_small(log: PartitionedLog) -> None:
    bench = await measure(log, events=3000, streams=10_000, runs=1)
    full, at_end, at_90 = bench.measures
    assert (bench.events, bench.streams) == (3000, 30)
    assert (full.events, at_end.events, at_90.events) == (3000, 0, 300)
    assert at_end.snapshot_bytes > 0 and at_90.snapshot_bytes > 0
