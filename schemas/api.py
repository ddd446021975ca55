"""The shapes of the HTTP API: the command request, its outcomes and the error bodies.

Which error is answered with which status and code is ``blackboard.schemas.errors``'s business.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from blackboard.schemas.types import ExpectedVersion
from blackboard.schemas.views import FieldChange

#: An agent's run id, model name or prompt hash: printable, no spaces, at most 200 characters.
AgentText = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+(?!\n)$",
                                        description="1-200 printable ASCII characters without spaces")]


class AgentMetadata(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Which agent run sent a command: it travels in the headers of the command's events and shows in history."""

    run_id: AgentText | None = None
    model: AgentText | None = None
    prompt_hash: AgentText | None = None


class CommandRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/commands`` body. ``payload`` is decoded by ``type`` in a second step.

    With ``dry_run`` the command is decided against current state and nothing is appended: the
    answer shows the events it would append, the fields they would change and the rules checked.
    """

    type: str
    stream: str
    payload: dict[str, Any]
    command_id: str | None = None
    expected_version: ExpectedVersion | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    dry_run: bool = False
    agent: AgentMetadata | None = None


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


class CheckView(msgspec.Struct, frozen=True):
    rule: str
    passed: bool


class DryRun(msgspec.Struct, frozen=True, tag="dry_run", tag_field="outcome"):
    """What a command would do, decided against current state; nothing was appended.

    ``would`` is ``accepted`` or ``rejected``; when rejected, ``code`` and ``message`` say by which rule.
    """

    command_id: str
    stream: str
    would: str
    version: int
    events: list[EventView]
    changes: list[FieldChange]
    checks: list[CheckView]
    code: str | None = None
    message: str | None = None
    details: dict[str, Any] = {}


Outcome = Accepted | Rejected


class FieldError(msgspec.Struct, frozen=True):
    path: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every 4xx/5xx that is not a command outcome: an RFC 9457 problem document (``application/problem+json``).

    ``type``, ``title``, ``status``, ``detail`` and ``instance`` are RFC 9457's members; ``code`` is the
    machine-readable code a client branches on, ``message`` the same text as ``detail`` (kept for clients
    that read it), ``errors`` the JSON path of each bad field, when there are some.
    """

    type: str
    title: str
    status: int
    detail: str
    code: str
    message: str
    instance: str | None = None
    errors: list[FieldError] = []
