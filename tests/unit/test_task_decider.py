"""The task decider: only the moves of the state machine, property-tested over random sequences."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.domain import task
from blackboard.domain.decider import Context, Decider, Rejection, fold
from blackboard.domain.registry import DECIDERS
from blackboard.domain.task import Task
from blackboard.schemas.registry import SYSTEM_COMMANDS
from blackboard.schemas.task import (
    HELD,
    SET_STATUS_TRANSITIONS,
    TRANSITIONS,
    CompleteTask,
    CreateTask,
    OverrideTaskStatus,
    SetTaskStatus,
    StartTask,
    TaskClaimed,
    TaskCommand,
    TaskCreated,
    TaskEvent,
    TaskStatus,
    TaskStatusChanged,
)

TASK: Decider[Task | None, TaskCommand, TaskEvent] = Decider(task.initial_state, task.decide, task.evolve)
STATUSES: list[Any] = sorted(get_args(TaskStatus))
CREATED = TaskCreated("render", 5, {"shot": "s-1"})
MOVES = {(frm, to) for frm, targets in SET_STATUS_TRANSITIONS.items() for to in targets}

# The shortest legal path from pending to each status.
PATHS = {
    "pending": [],
    "claimed": ["claimed"],
    "running": ["claimed", "running"],
    "succeeded": ["claimed", "running", "succeeded"],
    "failed": ["claimed", "running", "failed"],
    "cancelled": ["claimed", "running", "cancelled"],
}

CTX = Context(datetime(2026, 1, 1, tzinfo=UTC), "tester")


def history(*events: TaskEvent) -> Task | None:
    """The state after ``events``, from a stream that did not exist."""
    return fold(TASK, task.initial_state, events)


def in_status(status: str) -> Task | None:
    """A task created as ``CREATED`` and moved along the shortest path to ``status``."""
    if status == "blocked":  # only a task with dependencies waits for them
        return history(TaskCreated("render", 5, {"shot": "s-1"}, [], ["t-0"]))
    stops = ["pending", *PATHS[status]]
    return history(CREATED, *(TaskStatusChanged(a, b) for a, b in pairwise(stops)))


def test_the_registry_holds_the_task_decider() -> None:
    assert DECIDERS["task"] == (task.initial_state, task.decide, task.evolve)


def test_the_state_machine_names_every_status() -> None:
    assert set(TRANSITIONS) == set(STATUSES) >= {to for targets in TRANSITIONS.values() for to in targets}


def test_create_a_task_pending() -> None:
    state = history()
    result = task.decide(state, CreateTask("render", 5, {"shot": "s-1"}), CTX)
    assert result == [CREATED] and history(*result) == Task("render", 5, {"shot": "s-1"}, "pending")


def test_the_same_creation_again_changes_nothing() -> None:
    state = in_status("running")
    result = task.decide(state, CreateTask("render", 5, {"shot": "s-1"}), CTX)
    assert result == []


@pytest.mark.parametrize(
    "command",
    [CreateTask("other", 5, {"shot": "s-1"}), CreateTask("render", 6, {"shot": "s-1"}),
     CreateTask("render", 5, None), CreateTask("render", 5, {"shot": True})],
)
def test_a_creation_with_other_values_is_refused(command: CreateTask) -> None:
    state = in_status("pending")
    result = task.decide(state, command, CTX)
    assert isinstance(result, Rejection) and result.code == "already_exists"


def test_skills_and_dependencies_go_into_the_event_and_the_state() -> None:
    state = history()
    result = task.decide(state, CreateTask("render", 5, None, ["gpu", "ffmpeg"], ["t-0"]), CTX)
    assert result == [TaskCreated("render", 5, {}, ["gpu", "ffmpeg"], ["t-0"])]
    assert history(*result) == Task("render", 5, {}, "blocked", ["gpu", "ffmpeg"], ["t-0"])


def test_a_null_payload_is_the_same_creation_as_an_empty_one() -> None:
    state = history(TaskCreated("render", 5))
    assert task.decide(state, CreateTask("render", 5, None), CTX) == []
    assert task.decide(state, CreateTask("render", 5, {}), CTX) == []


@pytest.mark.parametrize("command", [CreateTask("render", 5, {"shot": "s-1"}, ["gpu"]),
                                     CreateTask("render", 5, {"shot": "s-1"}, [], ["t-0"])])
def test_a_creation_with_other_skills_or_dependencies_is_refused(command: CreateTask) -> None:
    state = in_status("pending")
    result = task.decide(state, command, CTX)
    assert isinstance(result, Rejection) and result.code == "already_exists"


def test_a_move_of_a_missing_task_is_refused() -> None:
    state = history()
    result = task.decide(state, SetTaskStatus("claimed"), CTX)
    assert isinstance(result, Rejection) and result.code == "not_found"


@pytest.mark.parametrize("to", STATUSES)
@pytest.mark.parametrize("frm", STATUSES)
def test_every_move_of_the_grid(frm: str, to: Any) -> None:
    state = in_status(frm)
    result = task.decide(state, SetTaskStatus(to), CTX)
    if frm == to:
        assert result == []
    elif to in SET_STATUS_TRANSITIONS[frm]:
        assert result == [TaskStatusChanged(frm, to)]
    else:
        assert isinstance(result, Rejection) and result.code == "illegal_transition"
        assert result.message.startswith(f"task cannot move from {frm} to {to}")
        assert result.details == {"from": frm, "to": to, "allowed": sorted(SET_STATUS_TRANSITIONS[frm])}


def test_a_status_set_by_hand_never_enters_nor_leaves_a_held_status() -> None:
    assert all(frm not in HELD and to not in HELD for frm, to in MOVES)
    assert MOVES <= {(frm, to) for frm, targets in TRANSITIONS.items() for to in targets}


AT = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def claimed() -> Task | None:
    """A task claimed by ``n-1`` with fencing token 1."""
    return history(CREATED, TaskClaimed("n-1", 1, AT, 30))


@pytest.mark.parametrize("to", ["running", "succeeded", "failed", "cancelled", "pending"])
def test_set_status_cannot_move_a_claimed_task_without_its_token(to: Any) -> None:
    result = task.decide(claimed(), SetTaskStatus(to), CTX)
    assert isinstance(result, Rejection) and result.code == "illegal_transition"
    assert "task.override_status" in result.message


def test_set_status_cannot_make_a_claim_without_a_holder() -> None:
    result = task.decide(in_status("pending"), SetTaskStatus("claimed"), CTX)
    assert isinstance(result, Rejection) and result.code == "illegal_transition"


def test_an_override_releases_the_claim_with_its_reason_and_fences_the_old_holder() -> None:
    state = claimed()
    result = task.decide(state, OverrideTaskStatus("pending", "node stuck on a bad GPU"), CTX)
    assert result == [TaskStatusChanged("claimed", "pending", "node stuck on a bad GPU", 1)]
    state = fold(TASK, state, result)
    assert state is not None and state.status == "pending" and state.claim is None
    late = task.decide(state, CompleteTask(1, {"ok": True}), CTX)
    assert isinstance(late, Rejection) and late.code == "lease_lost"
    assert isinstance(task.decide(state, StartTask(1), CTX), Rejection)


def test_an_override_to_where_a_task_already_is_without_a_claim_changes_nothing() -> None:
    assert task.decide(in_status("pending"), OverrideTaskStatus("pending", "again"), CTX) == []


def test_an_override_needs_a_reason_a_system_key_and_no_held_status() -> None:
    assert "task.override_status" in SYSTEM_COMMANDS
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"status": "pending"}, OverrideTaskStatus)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"status": "pending", "reason": ""}, OverrideTaskStatus)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"status": "running", "reason": "by hand"}, OverrideTaskStatus)


def test_evolve_trusts_a_move_the_state_machine_would_refuse() -> None:
    state = in_status("succeeded")
    after = task.evolve(state, TaskStatusChanged("succeeded", "pending"))
    assert after is not None and after.status == "pending"


def test_evolve_of_a_move_before_creation_keeps_the_missing_state() -> None:
    assert task.evolve(None, TaskStatusChanged("pending", "claimed")) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(STATUSES), max_size=30))
def test_random_moves_follow_the_state_machine(targets: list[Any]) -> None:
    accepted: list[TaskEvent] = [CREATED]
    state, last = in_status("pending"), "pending"
    for to in targets:
        result = task.decide(state, SetTaskStatus(to), CTX)
        if isinstance(result, Rejection):
            assert to not in SET_STATUS_TRANSITIONS[last]
            continue
        for event in result:
            assert isinstance(event, TaskStatusChanged) and (event.from_status, event.to_status) in MOVES
        state = fold(TASK, state, result)
        accepted += result
        last = to
    assert state is not None and state.status == last
    assert history(*accepted) == state
