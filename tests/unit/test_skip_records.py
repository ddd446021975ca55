"""An operator's skip record, folded by the command side's memory as the projector folds it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec

from blackboard.command_api.memory import PartitionMemory
from blackboard.command_api.snapshots import apply_snapshot, decode_snapshot, encode_snapshot, take_snapshot
from blackboard.events.codec import PassedOver, from_record, passed_over, to_record
from blackboard.events.log import StoredRecord
from blackboard.events.skips import skip_of, skip_of_record, skip_record, takes_version
from blackboard.ops import streams
from blackboard.projector.fold import BatchFold, decode
from blackboard.schemas.project import CostAdded, ProjectCreated
from tests.factories import Partition, envelope

AT = datetime(2026, 12, 7, tzinfo=UTC)
STREAM = "project:p-1"


def history_with_garbage() -> tuple[Partition, StoredRecord]:
    """p-1 created and costed 2, then a record of version 3 whose payload no build reads, then version 4."""
    part = Partition("events", 0)
    part.event(ProjectCreated("p-1", "EUR", Decimal(100), {}), stream=STREAM, version=1)
    part.event(CostAdded(Decimal(2), "render"), stream=STREAM, version=2)
    garbage = part.add(to_record(msgspec.structs.replace(
        envelope(CostAdded(Decimal(5), "render"), stream=STREAM, version=3), payload=b'{"amount": "not money"}')))
    part.event(CostAdded(Decimal(7), "render"), stream=STREAM, version=4)
    return part, garbage


def folded(part: Partition) -> PartitionMemory:
    memory = PartitionMemory(0)
    for rec in part.records:
        memory.fold_event(rec)
    return memory


def test_a_skip_record_is_passed_over_by_every_other_reader_and_reads_back() -> None:
    part, garbage = history_with_garbage()
    skip = skip_of_record(garbage, operator="ops", reason="garbage from a test", at=AT)
    rec = part.add(skip_record(skip))
    assert (skip.stream, skip.stream_version, skip.offset) == (STREAM, 3, garbage.offset)
    assert passed_over(rec) == "skip of a dead letter"
    try:
        from_record(rec)
        raise AssertionError("a skip record decoded as an event")
    except PassedOver:
        pass
    assert skip_of(rec) == skip
    assert skip_of(garbage) is None


def test_without_a_skip_the_stream_stays_unreadable() -> None:
    memory = folded(history_with_garbage()[0])
    assert STREAM in memory.unreadable and memory.streams[STREAM].version == 2


def test_a_skip_takes_the_version_and_folds_again_what_was_held_behind_it() -> None:
    part, garbage = history_with_garbage()
    part.add(skip_record(skip_of_record(garbage, operator="ops", reason="garbage", at=AT)))
    memory = folded(part)
    assert memory.unreadable == {} and memory.held == {}
    held = memory.streams[STREAM]
    assert held.version == 4 and held.state.budget.spent == Decimal(9)
    assert memory.next_offset == part.next_offset


def test_a_skip_of_a_record_this_build_reads_changes_nothing() -> None:
    part, _ = history_with_garbage()
    fine = part.records[1]
    part.add(skip_record(skip_of_record(fine, operator="ops", reason="by mistake", at=AT)))
    memory = folded(part)
    assert STREAM in memory.unreadable and memory.streams[STREAM].version == 2


def test_a_snapshot_taken_before_the_skip_keeps_what_is_held() -> None:
    part, garbage = history_with_garbage()
    before = folded(part)
    restored = PartitionMemory(0)
    apply_snapshot(restored, decode_snapshot(encode_snapshot(take_snapshot(before))))
    rec = part.add(skip_record(skip_of_record(garbage, operator="ops", reason="garbage", at=AT)))
    restored.fold_event(rec)
    assert restored.unreadable == {} and restored.streams[STREAM].version == 4


def test_a_stream_takes_the_version_only_when_exactly_one_behind() -> None:
    skip = skip_of_record(history_with_garbage()[1], operator="ops", reason="r", at=AT)
    assert [takes_version(v, skip) for v in (None, 1, 2, 3)] == [False, False, True, False]


def first_record_garbage() -> tuple[Partition, StoredRecord]:
    """p-1's first record a creation no build reads, then a readable creation as version 2 and a cost."""
    part = Partition("events", 0)
    garbage = part.add(to_record(msgspec.structs.replace(
        envelope(ProjectCreated("p-1", "EUR", Decimal(0), {}), stream=STREAM, version=1), payload=b'{"title": 5}')))
    part.event(ProjectCreated("p-1", "EUR", Decimal(100), {}), stream=STREAM, version=2)
    part.event(CostAdded(Decimal(7), "render"), stream=STREAM, version=3)
    return part, garbage


def test_a_skip_of_a_stream_s_first_record_begins_it_at_version_1() -> None:
    part, garbage = first_record_garbage()
    skip = skip_of_record(garbage, operator="ops", reason="garbage", at=AT)
    assert [takes_version(v, skip) for v in (None, 0, 1)] == [True, True, False]
    before = folded(part)
    assert STREAM in before.unreadable and STREAM not in before.streams
    part.add(skip_record(skip))
    memory = folded(part)
    assert memory.unreadable == {} and memory.held == {}
    held = memory.streams[STREAM]
    assert held.version == 3 and held.state.budget.total == Decimal(100) and held.state.budget.spent == Decimal(7)


def test_the_projector_s_fold_begins_a_stream_without_a_row_at_the_skipped_version() -> None:
    items = [decode(rec) for rec in first_record_garbage()[0].records]
    fold = BatchFold({}, recorded={})  # as a resolve loads it: the letter's stream not blocked there
    fold.skip(items[0])
    assert fold.floors == {STREAM: 1} and fold.projects == {}
    for item in items[1:]:
        fold.fold(item)
    assert fold.poison == []
    assert fold.projects["p-1"]["version"] == 3 and fold.projects["p-1"]["state"].budget.spent == Decimal(7)


def test_without_the_skip_the_projector_s_fold_refuses_a_creation_at_version_2() -> None:
    items = [decode(rec) for rec in first_record_garbage()[0].records[1:]]
    fold = BatchFold({}, recorded={})
    fold.fold(items[0])
    assert [p.reason for p in fold.poison] == [f"{STREAM} is at version 0; version 2 is not the next"]


def test_the_stream_replay_of_an_operator_shows_the_skip_and_goes_on() -> None:
    part, garbage = history_with_garbage()
    part.records.pop()  # no record after the garbage before the skip
    part.next_offset -= 1
    part.add(skip_record(skip_of_record(garbage, operator="ops", reason="garbage", at=AT)))
    part.event(CostAdded(Decimal(1), "render"), stream=STREAM, version=4)
    steps = streams.replay(STREAM, part.records)
    assert [(s.version, s.type, s.error is None) for s in steps] == [
        (1, "project.created", True), (2, "project.cost_added", True), (3, "project.cost_added", False),
        (3, "dead_letter.skipped", True), (4, "project.cost_added", True)]
    assert streams.last_version(steps) == 4 and steps[-1].state["budget"]["spent"] == "3"


def test_the_stream_replay_folds_what_was_held_once_the_skip_gives_the_version_before_it() -> None:
    from blackboard.ops import streams

    part, garbage = history_with_garbage()
    part.add(skip_record(skip_of_record(garbage, operator="ops", reason="garbage", at=AT)))
    steps = streams.replay(STREAM, part.records)
    assert [(s.version, s.type, s.error is None) for s in steps] == [
        (1, "project.created", True), (2, "project.cost_added", True), (3, "project.cost_added", False),
        (4, "project.cost_added", False), (3, "dead_letter.skipped", True), (4, "project.cost_added", True)]
    assert streams.last_version(steps) == 4
    assert steps[-1].state["budget"]["spent"] == "9"
