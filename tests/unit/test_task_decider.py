"""The task decider: only the moves of the state machine, property-tested over random sequences."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.command_api.decider import DECIDERS, Rejection, fold
from blackboard.schemas.task import TRANSITIONS, CreateTask, SetTaskStatus, TaskCreated, TaskStatusChanged

TASK = DECIDERS["task"]
STATUSES = sorted(TRANSITIONS)
CREATED = TaskCreated("render", 5, {"shot": "s-1"})


def in_status(status: str) -> Any:
    # The shortest legal path from pending to each status.
    path = {"pending": [], "claimed": ["claimed"], "running": ["claimed", "running"],
            "succeeded": ["claimed", "running", "succeeded"], "failed": ["claimed", "running", "failed"],
            "cancelled": ["claimed", "running", "cancelled"]}[status]
    moves, current = [], "pending"
    for to in path:
        moves.append(TaskStatusChanged(current, to))
        current = to
    return fold(TASK, None, [CREATED, *moves])


def test_create_a_task_pending() -> None:
    assert TASK.decide(None, CreateTask("render", 5, {"shot": "s-1"})) == [CREATED]
    assert TASK.evolve(None, CREATED).status == "pending"


def test_the_same_creation_again_changes_nothing_and_another_is_refused() -> None:
    assert TASK.decide(in_status("running"), CreateTask("render", 5, {"shot": "s-1"})) == []
    refused = TASK.decide(in_status("pending"), CreateTask("other"))
    assert isinstance(refused, Rejection) and refused.code == "already_exists"


def test_a_move_of_a_missing_task_is_refused() -> None:
    refused = TASK.decide(None, SetTaskStatus("claimed"))
    assert isinstance(refused, Rejection) and refused.code == "not_found"


@pytest.mark.parametrize("to", STATUSES)
@pytest.mark.parametrize("frm", STATUSES)
def test_every_move_of_the_grid(frm: str, to: str) -> None:
    result = TASK.decide(in_status(frm), SetTaskStatus(to))  # type: ignore[arg-type]
    if frm == to:
        assert result == []
    elif to in TRANSITIONS[frm]:
        assert result == [TaskStatusChanged(frm, to)]
    else:
        assert isinstance(result, Rejection) and result.code == "illegal_transition"
        assert result.details == {"from": frm, "to": to, "allowed": sorted(TRANSITIONS[frm])}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(STATUSES), max_size=30))
def test_random_moves_follow_the_state_machine(targets: list[str]) -> None:
    state, accepted, last = in_status("pending"), [CREATED], "pending"
    for to in targets:
        result = TASK.decide(state, SetTaskStatus(to))  # type: ignore[arg-type]
        if isinstance(result, Rejection):
            continue
        for event in result:
            assert event.to_status in TRANSITIONS[event.from_status]
            state = TASK.evolve(state, event)
        accepted += result
        last = to
    assert state.status == last
    assert fold(TASK, None, accepted) == state
