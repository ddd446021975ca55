"""Task commands and events: creation and the status state machine."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from blackboard.schemas.types import Priority, ShortText

TaskStatus = Literal["pending", "claimed", "running", "succeeded", "failed", "cancelled"]

#: The moves a task's status may make; anything else is refused with ``illegal_transition``.
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"claimed"}),
    "claimed": frozenset({"running"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
    "failed": frozenset({"pending"}),
    "succeeded": frozenset(),
    "cancelled": frozenset(),
}


class CreateTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.create``: a new task, ``pending``."""

    name: ShortText
    priority: Priority = 0
    payload: dict[str, Any] | None = None


class SetTaskStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.set_status``: move along the state machine in ``TRANSITIONS``."""

    status: TaskStatus


class TaskCreated(msgspec.Struct, frozen=True):
    name: str
    priority: int = 0
    payload: dict[str, Any] | None = None


class TaskStatusChanged(msgspec.Struct, frozen=True):
    from_status: str
    to_status: str


TaskCommand = CreateTask | SetTaskStatus
TaskEvent = TaskCreated | TaskStatusChanged
