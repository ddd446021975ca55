"""The shapes of the HTTP API: the command request, its outcomes and the error bodies."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from blackboard.schemas.types import ExpectedVersion


class CommandRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/commands`` body. ``payload`` is decoded by ``type`` in a second step."""

    type: str
    stream: str
    payload: dict[str, Any]
    command_id: str | None = None
    expected_version: ExpectedVersion | None = None
    correlation_id: str | None = None
    causation_id: str | None = None


class EventView(msgspec.Struct, frozen=True):
    event_id: str
    type: str
    stream: str
    stream_version: int
    payload: Any


class Accepted(msgspec.Struct, frozen=True, tag="accepted", tag_field="outcome"):
    command_id: str
    stream: str
    version: int
    events: list[EventView]
    position: str


class Rejected(msgspec.Struct, frozen=True, tag="rejected", tag_field="outcome"):
    command_id: str
    code: str
    message: str
    details: dict[str, Any] = {}


Outcome = Accepted | Rejected


class FieldError(msgspec.Struct, frozen=True):
    path: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every 4xx/5xx that is not a command outcome: a machine-readable code and what is wrong."""

    code: str
    message: str
    errors: list[FieldError] = []
