"""Every command and event type by its wire name, with schema versions and upcasters.

Decoding goes through here so that a reader of the log gets today's Struct for any version
that was ever written, and a version it does not know is an error it can set aside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from blackboard.schemas import project, task

#: Command wire names → (aggregate category, payload Struct).
COMMAND_TYPES: dict[str, tuple[str, type[msgspec.Struct]]] = {
    "project.create": ("project", project.CreateProject),
    "project.add_cost": ("project", project.AddCost),
    "project.update_shot": ("project", project.UpdateShot),
    "task.create": ("task", task.CreateTask),
    "task.set_status": ("task", task.SetTaskStatus),
}

#: Event wire names → (Struct, current schema version).
EVENT_TYPES: dict[str, tuple[type[msgspec.Struct], int]] = {
    "project.created": (project.ProjectCreated, 1),
    "project.cost_added": (project.CostAdded, 1),
    "project.shot_updated": (project.ShotUpdated, 1),
    "task.created": (task.TaskCreated, 2),
    "task.status_changed": (task.TaskStatusChanged, 1),
}

_NAME_OF: dict[type[msgspec.Struct], str] = {cls: name for name, (cls, _) in EVENT_TYPES.items()}

#: (type, from_version) → a pure function turning that version's JSON object into the next one's.
#: Bumping a version means one entry here per older version (``decode_event`` chains them).
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("task.created", 1): task.upcast_task_created_v1,
}


class UnknownEventType(ValueError):
    """The log holds an event type or schema version this build does not know."""


def event_name(event: msgspec.Struct) -> str:
    """The wire name of an event Struct (``CostAdded`` → ``project.cost_added``)."""
    return _NAME_OF[type(event)]


def schema_version_of(name: str) -> int:
    return EVENT_TYPES[name][1]


def encode_payload(event: msgspec.Struct) -> bytes:
    return msgspec.json.encode(event)


def decode_event(name: str, schema_version: int, payload: bytes) -> msgspec.Struct:
    """Decode an event payload of any known version into today's Struct.

    Raises ``UnknownEventType`` for an unknown name or a newer version than this build
    knows, and ``msgspec.DecodeError`` (or ``ValidationError``) for a malformed payload.
    """
    known = EVENT_TYPES.get(name)
    if known is None:
        raise UnknownEventType(f"unknown event type {name!r}")
    cls, current = known
    if schema_version > current or schema_version < 1:
        raise UnknownEventType(f"{name} schema_version {schema_version} is not in 1..{current}")
    if schema_version == current:
        return msgspec.json.decode(payload, type=cls)
    obj: dict[str, Any] = msgspec.json.decode(payload, type=dict[str, Any])
    for version in range(schema_version, current):
        obj = UPCASTERS[(name, version)](obj)
    return msgspec.convert(obj, type=cls)
