"""The one submit path: every command, whoever sends it, becomes a ``Submission`` here.

The HTTP routes (``POST /v1/commands``, the checkpoint routes, the cluster routes), the commands
topic's intake, claims, the reservation sweeper and the process managers all describe their command
as a ``CommandRequest`` (the body of ``POST /v1/commands``) with its decoded payload, and
``submission`` makes the one ``Submission`` an owner decides; ``submit`` hands it to the command
service (which decides it here or routes it to its partition's owner).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry.context import Context as OtelContext

from blackboard.command_api.validation import command_fingerprint, validate_command
from blackboard.schemas.api import AgentMetadata, CommandRequest, DryRun, Outcome
from blackboard.schemas.registry import COMMAND_TYPES

if TYPE_CHECKING:
    from blackboard.command_api.service import CommandService


@dataclass(slots=True)
class Submission:
    """A validated command waiting for its partition's owner (made by ``submission`` only)."""

    category: str
    stream: str
    command_type: str
    payload: msgspec.Struct
    command_id: str
    fingerprint: str
    actor: str
    #: The tenant of the principal that sent it (``None``: sent from inside, by a process manager).
    tenant: str | None
    correlation_id: str
    causation_id: str
    expected_version: int | None
    #: The request, with its ``command_id``: what goes on the commands topic if it is routed.
    request: CommandRequest
    future: asyncio.Future[tuple[Outcome | DryRun, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    #: The trace context of the request (its HTTP span): the owner decides in a task of its own.
    trace: OtelContext | None = None
    #: Decide and answer what would happen, append nothing, remember nothing.
    dry_run: bool = False
    agent: AgentMetadata | None = None
    #: The command's offset in ``commands[partition]`` when it came through the commands topic.
    source_offset: int | None = None


def submission(request: CommandRequest, payload: msgspec.Struct, *, actor: str, tenant: str | None = None,
               fingerprint: str | None = None, trace: OtelContext | None = None,
               source_offset: int | None = None) -> Submission:
    """The ``Submission`` of ``request`` (whose ``payload`` is already decoded and checked), sent by ``actor``.

    A request without ``command_id`` gets a fresh one; correlation and causation default to the
    command id. ``fingerprint`` defaults to ``command_fingerprint(request)`` (give it when it is known).
    """
    command_id = request.command_id or uuid.uuid4().hex
    if request.command_id is None:
        request = msgspec.structs.replace(request, command_id=command_id)
    return Submission(
        category=COMMAND_TYPES[request.type][0], stream=request.stream, command_type=request.type, payload=payload,
        command_id=command_id, fingerprint=fingerprint or command_fingerprint(request), actor=actor,
        tenant=tenant,
        correlation_id=request.correlation_id or command_id, causation_id=request.causation_id or command_id,
        expected_version=request.expected_version, request=request, trace=trace, dry_run=request.dry_run,
        agent=request.agent, source_offset=source_offset,
    )


async def submit(service: CommandService, request: CommandRequest, payload: msgspec.Struct, *, actor: str,
                 tenant: str | None = None, fingerprint: str | None = None,
                 trace: OtelContext | None = None) -> tuple[Outcome | DryRun, bool]:
    """Decide ``request`` on its partition's owner; ``(outcome, replayed)``.

    Raises a ``CommandError`` when it was not decided (``IdempotencyKeyReused``, ``NotOwner``, …).
    """
    return await service.submit(submission(request, payload, actor=actor, tenant=tenant, fingerprint=fingerprint,
                                           trace=trace))


async def submit_json(service: CommandService, *, stream: str, type_: str, payload: dict[str, Any], command_id: str,
                      actor: str, tenant: str | None = None, correlation_id: str = "",
                      causation_id: str = "") -> Outcome:
    """Validate the command exactly as ``POST /v1/commands`` does and decide it; its outcome.

    For commands sent from inside a process (the process managers, the task graph). Raises
    ``InvalidCommand`` for a command that is not valid (a bug of the sender, never retried) and a
    ``CommandError`` when the owner could not decide it (retry with the same id when ``retriable``).
    """
    body: dict[str, Any] = {"type": type_, "stream": stream, "command_id": command_id, "payload": payload}
    if correlation_id:
        body["correlation_id"] = correlation_id
    if causation_id:
        body["causation_id"] = causation_id
    valid = validate_command(msgspec.json.encode(body))
    outcome, _ = await submit(service, valid.request, valid.payload, actor=actor, tenant=tenant,
                              fingerprint=valid.fingerprint)
    assert not isinstance(outcome, DryRun)  # dry_run is never set here
    return outcome
