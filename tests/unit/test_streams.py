"""The pure part of ``blackboard stream``: which records are the stream's, and the state after each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest

from blackboard.domain import task
from blackboard.domain.decider import fold
from blackboard.domain.registry import DECIDERS
from blackboard.events.log import Record
from blackboard.events.partitioner import partition_for
from blackboard.ops import streams
from blackboard.schemas.project import CostAdded, ProjectCreated
from blackboard.schemas.task import TaskCreated, TaskStatusChanged
from tests.factories import OCCURRED_AT, Partition

CREATED = TaskCreated("render", 5, {"frames": 10}, ["gpu"], ["t-0"])


def partition() -> Partition:
    """task:t-1 created and moved twice, with another stream, a foreign record and two bad ones between."""
    p = Partition("events", 1)
    p.event(CREATED, stream="task:t-1", version=1)
    p.event(ProjectCreated("Trailer", "EUR", Decimal("100.00")), stream="project:t-1", version=1)
    p.add(Record(key=b"t-1", value=b"not an event"))
    p.event(TaskStatusChanged("pending", "claimed"), stream="task:t-1", version=2,
            occurred_at=OCCURRED_AT + timedelta(seconds=1))
    p.event(TaskStatusChanged("claimed", "running"), stream="task:t-1", version=2)
    p.event(TaskStatusChanged("claimed", "running"), stream="task:t-1", version=3, schema_version=99)
    p.event(TaskStatusChanged("claimed", "running"), stream="task:t-1", version=3,
            occurred_at=OCCURRED_AT + timedelta(seconds=2))
    return p


def test_only_the_streams_records_are_steps_and_bad_ones_say_why() -> None:
    steps = streams.replay("task:t-1", partition().records)
    assert [(s.position.offset, s.version, s.error) for s in steps] == [
        (0, 1, None), (3, 2, None), (4, 2, "version 2 is not the next version (3)"),
        (5, 3, "undecodable: task.status_changed schema_version 99 is not in 1..1"), (6, 3, None)]
    assert streams.last_version(steps) == 3
    assert steps[0].payload == msgspec.to_builtins(CREATED)
    expected = {"name": "render", "priority": 5, "payload": {"frames": 10}, "status": "running",
                "required_skills": ["gpu"], "depends_on": ["t-0"]}
    assert {k: steps[-1].state[k] for k in expected} == expected


def test_every_steps_state_is_the_fold_of_the_events_before_it() -> None:
    folded = [CREATED, TaskStatusChanged("pending", "claimed"), TaskStatusChanged("claimed", "running")]
    steps = [s for s in streams.replay("task:t-1", partition().records) if s.error is None]
    for n, step in enumerate(steps, start=1):
        assert step.state == msgspec.to_builtins(fold(DECIDERS["task"], task.initial_state, folded[:n]))
        assert streams.state_at_version("task:t-1", "events", 1, steps, n).state == step.state
    assert streams.state_at_version("task:t-1", "events", 1, steps, 0).state is None
    with pytest.raises(streams.StreamNotFound, match="task:t-1 is at version 3; it has no version 4"):
        streams.state_at_version("task:t-1", "events", 1, steps, 4)


def test_the_state_at_a_time_is_after_every_event_until_then() -> None:
    steps = streams.replay("task:t-1", partition().records)
    at = streams.state_at_time
    assert at("task:t-1", "events", 1, steps, OCCURRED_AT - timedelta(seconds=1)).version == 0
    assert at("task:t-1", "events", 1, steps, OCCURRED_AT).version == 1
    assert at("task:t-1", "events", 1, steps, OCCURRED_AT + timedelta(seconds=1, microseconds=1)).version == 2
    naive = (OCCURRED_AT + timedelta(seconds=5)).replace(tzinfo=None)
    assert at("task:t-1", "events", 1, steps, naive).version == 3


def test_a_project_state_encodes_money_as_text() -> None:
    p = Partition("events", 0)
    p.event(ProjectCreated("Trailer", "EUR", Decimal("100.00")), stream="project:p-1", version=1)
    p.event(CostAdded(Decimal("12.5"), "render"), stream="project:p-1", version=2)
    [_, after] = streams.replay("project:p-1", p.records)
    assert after.state["budget"]["spent"] == "12.5" and after.state["budget"]["total"] == "100.00"


@pytest.mark.parametrize(("stream", "message"), [
    ("nocolon", "is not of the form"), ("task:", "is not of the form"), ("robot:r-1", "unknown category 'robot'")])
def test_a_bad_stream_name_is_refused(stream: str, message: str) -> None:
    with pytest.raises(streams.StreamNotFound, match=message):
        streams.partition_of(stream, 8)


def test_the_partition_is_the_command_sides() -> None:
    assert streams.partition_of("project:p-1", 8) == partition_for("p-1", 8)


def test_iso_times() -> None:
    assert streams.parse_time("2025-03-01T10:00:00Z") == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert streams.parse_time("2025-03-01T10:00:00") == datetime(2025, 3, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="'soon' is not an ISO 8601 time"):
        streams.parse_time("soon")
