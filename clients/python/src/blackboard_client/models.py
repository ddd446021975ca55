"""The answers the client returns, as msgspec Structs (decoded straight from the server's JSON)."""

from __future__ import annotations

from typing import Any

import msgspec


class EventView(msgspec.Struct, frozen=True):
    """One appended event: its id, type, stream, version in the stream and payload."""

    event_id: str
    type: str
    stream: str
    stream_version: int
    payload: Any


class Accepted(msgspec.Struct, frozen=True):
    """The command was decided and its events appended. ``position`` is its consistency token."""

    command_id: str
    stream: str
    version: int
    position: str
    events: list[EventView]


class CheckView(msgspec.Struct, frozen=True):
    rule: str
    passed: bool


class DryRun(msgspec.Struct, frozen=True):
    """What a command would do against current state (``would`` is ``accepted`` or ``rejected``); nothing
    was appended."""

    command_id: str
    stream: str
    would: str
    version: int
    events: list[EventView]
    changes: list[dict[str, Any]]
    checks: list[CheckView]
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = {}


class Spooled(msgspec.Struct, frozen=True):
    """The server could not be reached: the command is in the offline spool (on disk, fsync'd) and will be
    delivered with this ``command_id`` by ``flush``."""

    command_id: str
    stream: str
    type: str
    seq: int


class SpoolRejection(msgspec.Struct, frozen=True):
    """A spooled command the server refused when it was delivered: by a rule (``status`` 409) or as invalid."""

    command_id: str
    stream: str
    type: str
    status: int
    code: str
    message: str
    details: dict[str, Any] = {}
    payload: dict[str, Any] = {}


class BatchResult(msgspec.Struct, frozen=True):
    """``get_shots``: the shots found, in the order asked, and the ids that do not exist."""

    items: list[dict[str, Any]]
    missing: list[str]


class Claim(msgspec.Struct, frozen=True):
    """A claimed task: its fencing ``token`` goes with every later command about it."""

    task_id: str
    token: int
    expires_at: str
    name: str
    type: str
    priority: int
    payload: dict[str, Any]
    required_skills: list[str]
    attempts: int
    position: str


class Page(msgspec.Struct, frozen=True):
    items: list[Any]
    next_cursor: str | None = None


class Checkpoint(msgspec.Struct, frozen=True):
    """A checkpoint's bytes with its number in the thread and their sha256."""

    seq: int
    sha256: str
    data: bytes
