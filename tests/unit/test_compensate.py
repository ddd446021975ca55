"""Compensation examples per aggregate, and conflicts: reported and skipped unless overwrite is asked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from blackboard.domain.compensators import plan_run
from blackboard.domain.decider import Context, Rejection
from blackboard.domain.registry import DECIDERS
from blackboard.domain.rollback import Proposal, Role, Step, command_id, rollback_id
from blackboard.schemas.lease import AcquireLease
from blackboard.schemas.project import CreateProject, CreateShot, UpdateShot
from blackboard.schemas.task import ClaimTask, CreateTask, FailTask, StartTask

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def script(category: str, commands: list[tuple[Any, str, Role]]) -> list[Step]:
    decider, state, steps = DECIDERS[category], DECIDERS[category].initial_state, []
    for command, actor, role in commands:
        events = decider.decide(state, command, Context(T0, actor))
        assert not isinstance(events, Rejection), events
        for event in events:
            state = decider.evolve(state, event)
            steps.append(Step(event, actor, role))
    return steps


def shots_edited_by_both() -> list[Step]:
    return script("project", [
        (CreateProject("T", "EUR", "100"), "alice", "other"),
        (CreateShot("s-1", {"status": "todo", "lens": 50}), "alice", "other"),
        (UpdateShot("s-1", {"status": "done", "lens": 35}, 1), "bot", "run"),
        (UpdateShot("s-1", {"lens": 85}, 2), "bob", "other"),
    ])


def test_a_conflicting_field_is_reported_and_skipped_the_others_are_restored() -> None:
    plan = plan_run("r-1", {"project:p-1": shots_edited_by_both()})
    assert [(c.path, c.before, c.run_value, c.current, c.by) for c in plan.conflicts] == [
        ("/shots/s-1/fields/lens", 50, 35, 85, ["bob"])]
    [command] = plan.commands
    assert (command.type, command.payload) == ("project.update_shot", {
        "shot_id": "s-1", "patch": {"status": "todo"}, "preconditions": {"status": "done"}})
    assert [(c.path, c.from_, c.to) for c in command.changes] == [("/shots/s-1/fields/status", "done", "todo")]


def test_overwrite_puts_back_the_conflicting_fields_too() -> None:
    plan = plan_run("r-1", {"project:p-1": shots_edited_by_both()}, overwrite=True)
    assert plan.on_conflict == "overwrite" and len(plan.conflicts) == 1
    assert plan.commands[0].payload["patch"] == {"lens": 50, "status": "todo"}


def test_command_ids_are_the_same_for_the_same_run_stream_and_step() -> None:
    first = plan_run("r-1", {"project:p-1": shots_edited_by_both()})
    again = plan_run("r-1", {"project:p-1": shots_edited_by_both()})
    other = plan_run("r-2", {"project:p-1": shots_edited_by_both()})
    assert first.commands[0].command_id == again.commands[0].command_id != other.commands[0].command_id
    assert first.rollback_id == rollback_id("r-1") != other.rollback_id
    assert command_id("r-1", "project:p-1", _proposal()) != command_id("r-1", "project:p-2", _proposal())


def _proposal() -> Proposal:
    return Proposal("k", "t", {}, [])


def test_a_task_the_run_created_is_cancelled_one_it_failed_is_retried() -> None:
    created = script("task", [(CreateTask("render"), "bot", "run")])
    failed = script("task", [
        (CreateTask("render", max_attempts=1), "alice", "other"), (ClaimTask("n-1"), "bot", "run"),
        (StartTask(1), "bot", "run"), (FailTask(1, "oops"), "bot", "run")])
    plan = plan_run("r-1", {"task:t-1": created, "task:t-2": failed})
    assert [(c.stream, c.type) for c in plan.commands] == [("task:t-1", "task.cancel"), ("task:t-2", "task.retry")]


def test_a_task_the_run_holds_is_left_to_its_claim_and_said_so() -> None:
    held = script("task", [(CreateTask("render"), "alice", "other"), (ClaimTask("n-1"), "bot", "run")])
    plan = plan_run("r-1", {"task:t-1": held})
    assert plan.commands == [] and "claim expires" in plan.unrestorable[0].reason


def test_a_lease_the_run_holds_is_released_and_an_uncompensated_category_is_listed() -> None:
    held = script("lease", [(AcquireLease("bot"), "bot", "run")])
    plan = plan_run("r-1", {"lease:l-1": held, "doc:reviews.r-1": []})
    assert [(c.type, c.payload) for c in plan.commands] == [("lease.release", {"holder": "bot", "token": 1})]
    assert plan.unrestorable[0].stream == "doc:reviews.r-1"
