"""The task decider: stream ``task:<id>``; a status that only moves along its state machine."""

from __future__ import annotations

from typing import Any

import msgspec

from blackboard.command_api.decider import Rejection
from blackboard.schemas.task import (
    TRANSITIONS,
    CreateTask,
    TaskCommand,
    TaskCreated,
    TaskEvent,
    TaskStatusChanged,
)

CATEGORY = "task"


class Task(msgspec.Struct, frozen=True):
    name: str
    priority: int
    payload: dict[str, Any] | None
    status: str


#: The stream does not exist yet.
initial_state: Task | None = None


def evolve(state: Task | None, event: TaskEvent) -> Task | None:
    """The state after ``event``. Total and trusting: an appended event happened."""
    match event:
        case TaskCreated(name, priority, payload):
            return Task(name, priority, payload, "pending")
        case TaskStatusChanged(to_status=to) if state is not None:
            return msgspec.structs.replace(state, status=to)
    return state


def decide(state: Task | None, command: TaskCommand) -> list[TaskEvent] | Rejection:
    """The events ``command`` causes in ``state``, or the rule that refuses it."""
    if isinstance(command, CreateTask):
        event = TaskCreated(command.name, command.priority, command.payload)
        if state is None:
            return [event]
        if evolve(None, event) == msgspec.structs.replace(state, status="pending"):
            return []  # the same creation again: nothing new happened
        return Rejection("already_exists", "a task with this id already exists with other values")
    if state is None:
        return Rejection("not_found", "the task does not exist; create it first")
    if command.status == state.status:
        return []  # already there: moving again changes nothing
    allowed = TRANSITIONS[state.status]
    if command.status not in allowed:
        return Rejection(
            "illegal_transition",
            f"task cannot move from {state.status} to {command.status}",
            {"from": state.status, "to": command.status, "allowed": sorted(allowed)},
        )
    return [TaskStatusChanged(state.status, command.status)]
