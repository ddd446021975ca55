"""The task decider: stream ``task:<id>``; a status that only moves along its state machine."""

from __future__ import annotations

from typing import Any

import msgspec

from blackboard.command_api.decider import Context, Rejection
from blackboard.schemas.task import (
    TRANSITIONS,
    CreateTask,
    SetTaskStatus,
    TaskCommand,
    TaskCreated,
    TaskEvent,
    TaskStatusChanged,
)

CATEGORY = "task"

# ── state ──────────────────────────────────────────────────────────────────────────────


class Task(msgspec.Struct, frozen=True):
    """A task as its decisions need it: what it is, where it stands, what it needs and waits for."""

    name: str
    priority: int
    payload: dict[str, Any]
    status: str
    required_skills: list[str] = []
    depends_on: list[str] = []


# ── fold ───────────────────────────────────────────────────────────────────────────────

#: The stream does not exist yet.
initial_state: Task | None = None


def evolve(state: Task | None, event: TaskEvent) -> Task | None:
    """The state after ``event``. Total and trusting: an appended event happened."""
    match event:
        case TaskCreated() as e:
            return Task(e.name, e.priority, dict(e.payload), "pending", list(e.required_skills), list(e.depends_on))
        case TaskStatusChanged(to_status=to) if state is not None:
            return msgspec.structs.replace(state, status=to)
    return state


# ── decisions ──────────────────────────────────────────────────────────────────────────


def decide(state: Task | None, command: TaskCommand, ctx: Context) -> list[TaskEvent] | Rejection:
    """The events ``command`` causes in ``state``, or the rule that refuses it."""
    if isinstance(command, CreateTask):
        return _create(state, command)
    if state is None:
        return Rejection("not_found", "the task does not exist; create it first with task.create")
    return _set_status(state, command)


def _create(state: Task | None, c: CreateTask) -> list[TaskEvent] | Rejection:
    event = TaskCreated(c.name, c.priority, dict(c.payload or {}), list(c.required_skills), list(c.depends_on))
    if state is None:
        return [event]
    # Compared as canonical JSON: Python's == says {"a": True} == {"a": 1}; JSON does not.
    ours = (state.name, state.priority, state.payload, state.required_skills, state.depends_on)
    if _canonical(ours) == _canonical((event.name, event.priority, event.payload, event.required_skills,
                                       event.depends_on)):
        return []  # the same creation again: nothing new happened
    return Rejection("already_exists",
                     "the task already exists with another name, priority, payload, required_skills or depends_on")


def _canonical(value: Any) -> bytes:
    return msgspec.json.encode(value, order="sorted")


def _set_status(state: Task, c: SetTaskStatus) -> list[TaskEvent] | Rejection:
    if c.status == state.status:
        return []  # already there: moving again changes nothing
    allowed = TRANSITIONS.get(state.status, frozenset())
    if c.status not in allowed:
        return Rejection(
            "illegal_transition",
            f"task cannot move from {state.status} to {c.status}",
            {"from": state.status, "to": c.status, "allowed": sorted(allowed)},
        )
    return [TaskStatusChanged(state.status, c.status)]
