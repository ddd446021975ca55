"""Task commands and events: creation and the status state machine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec

from blackboard.schemas.types import Identifier, Priority, ShortText, Skill

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


#: Most skills one task may require, and most tasks it may depend on.
MAX_SKILLS = 32
MAX_DEPENDENCIES = 64


class CreateTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.create``: a new task, ``pending``.

    ``required_skills`` are what a worker must offer to claim it; ``depends_on`` names other
    tasks by id (a task naming itself is refused by the command validation, which knows the stream).

    Note: ``payload`` ``null`` is still accepted and means ``{}``, as clients sent it before version 2.
    """

    name: ShortText
    priority: Priority = 0
    payload: dict[str, Any] | None = None
    required_skills: Annotated[list[Skill], msgspec.Meta(max_length=MAX_SKILLS)] = []
    depends_on: Annotated[list[Identifier], msgspec.Meta(max_length=MAX_DEPENDENCIES)] = []

    def __post_init__(self) -> None:
        for field, values in (("required_skills", self.required_skills), ("depends_on", self.depends_on)):
            repeated = _repeated(values)
            if repeated is not None:
                raise ValueError(f"{field} lists {repeated!r} more than once")


def _repeated(values: Sequence[str]) -> str | None:
    """The first value of ``values`` seen twice, or ``None``."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


class SetTaskStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.set_status``: move along the state machine in ``TRANSITIONS``."""

    status: TaskStatus


class TaskCreated(msgspec.Struct, frozen=True):
    """``task.created``, schema version 2: version 1 plus skills and dependencies, ``payload`` never null."""

    name: str
    priority: int = 0
    payload: dict[str, Any] = {}
    required_skills: list[str] = []
    depends_on: list[str] = []


class TaskCreatedV1(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.created`` as schema version 1 wrote it; kept to document (and test) the upcaster's input."""

    name: str
    priority: int = 0
    payload: dict[str, Any] | None = None


def upcast_task_created_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """A version 1 ``task.created`` object as version 2: ``payload`` null → ``{}``, no skills, no dependencies.

    Note: pure and given JSON objects, not Structs, so that it runs before today's Struct validates.
    """
    payload = obj.get("payload")
    return {**obj, "payload": {} if payload is None else payload, "required_skills": [], "depends_on": []}


class TaskStatusChanged(msgspec.Struct, frozen=True):
    from_status: str
    to_status: str


TaskCommand = CreateTask | SetTaskStatus
TaskEvent = TaskCreated | TaskStatusChanged
