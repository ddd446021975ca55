"""The one submit path: every command, whoever sends it, is checked and becomes a ``Submission`` here.

Read top to bottom, it is the second step of ``POST /v1/commands``: ``validate_command`` turns the raw
body into a typed command, or the exact reasons it is not one (the parse, walk and convert of
``blackboard.domain.decoding``, the front every route with a body goes through; then the command's own
checks: a known type, a stream of its category, references that are identifiers, the payload converted
to its command's Struct). ``submission`` makes the one ``Submission`` an owner decides, and ``submit``
hands it to the command service (which decides it here or routes it to its partition's owner).

The HTTP routes (``POST /v1/commands``, the checkpoint routes, the cluster routes), the commands
topic's intake, claims, the reservation sweeper and the process managers all describe their command
as a ``CommandRequest`` (the body of ``POST /v1/commands``) with its decoded payload, and come here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
from opentelemetry.context import Context as OtelContext

from blackboard.domain import decoding
from blackboard.schemas.api import AgentMetadata, CommandRequest, DryRun, FieldError, Outcome
from blackboard.schemas.registry import COMMAND_TYPES
from blackboard.schemas.task import CreateTask
from blackboard.schemas.types import Identifier

if TYPE_CHECKING:
    from blackboard.command_api.service import CommandService

# ── the command, checked ───────────────────────────────────────────────────────────────

_REF = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class InvalidCommand(Exception):
    """The body is not a command: ``code`` is ``malformed_json`` or ``invalid_command``.

    ``malformed_json`` means the body is not JSON at all; ``invalid_command`` means valid JSON
    that breaks the command schema or our limits, with the JSON path of every bad value.
    """

    def __init__(self, code: str, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.code = code
        self.errors = errors


class ValidCommand(NamedTuple):
    """A command that passed every check, with where it goes and what identifies it."""

    request: CommandRequest
    payload: msgspec.Struct
    category: str
    stream_id: str
    fingerprint: str


def validate_command(body: bytes) -> ValidCommand:
    """Decode and check ``body``; raise ``InvalidCommand`` with every reason found."""
    try:
        request = decoding.decode(body, CommandRequest)
    except decoding.BadInput as exc:
        raise InvalidCommand("malformed_json" if exc.malformed else "invalid_command", exc.errors) from None
    category, payload_type = _command_type(request)
    errors = _reference_errors(request, category)
    try:
        payload = decoding.convert(request.payload, payload_type, "$.payload")
    except decoding.BadInput as exc:
        raise InvalidCommand("invalid_command", errors + exc.errors) from None
    _refuse(errors)
    stream_id = request.stream.partition(":")[2]
    _refuse_self_dependency(payload, stream_id)
    return ValidCommand(request, payload, category, stream_id, command_fingerprint(request))


def command_fingerprint(request: CommandRequest) -> str:
    """What makes two commands the same: sha256 of the canonical JSON of type, stream, expected
    version and payload (keys sorted).

    Note: the fingerprint is stored with every outcome; changing how it is computed would make
    every repeated ``command_id`` look like a different command.
    """
    canonical = json.dumps([request.type, request.stream, request.expected_version, request.payload],
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _refuse(errors: list[FieldError]) -> None:
    if errors:
        raise InvalidCommand("invalid_command", errors)


def _refuse_self_dependency(payload: msgspec.Struct, task_id: str) -> None:
    """Refuse, with the code ``self_dependency``, a task that names itself in ``depends_on``.

    Note: checked here and not in the decider: only the request knows the stream a payload goes to,
    and a task waiting for itself could never run.
    """
    if isinstance(payload, CreateTask) and task_id in payload.depends_on:
        at = payload.depends_on.index(task_id)
        raise InvalidCommand("self_dependency", [FieldError(
            f"$.payload.depends_on[{at}]", f"task {task_id!r} may not depend on itself")])


def _command_type(request: CommandRequest) -> tuple[str, type[msgspec.Struct]]:
    known = COMMAND_TYPES.get(request.type)
    if known is None:
        raise InvalidCommand("invalid_command", [FieldError(
            "$.type", f"unknown command type {request.type[:64]!r}; known: {', '.join(sorted(COMMAND_TYPES))}")])
    return known


def _reference_errors(request: CommandRequest, category: str) -> list[FieldError]:
    errors = []
    prefix, sep, ident = request.stream.partition(":")
    if not sep or prefix != category:
        errors.append(FieldError(
            "$.stream", f"a {request.type} command goes to a stream '{category}:<id>', not {request.stream[:64]!r}"))
    elif not _is_identifier(ident):
        errors.append(FieldError(
            "$.stream", f"the id {ident[:64]!r} must be 1-128 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit"))
    for name in ("command_id", "correlation_id", "causation_id"):
        ref = getattr(request, name)
        if ref is not None and not _REF.fullmatch(ref):
            errors.append(FieldError(f"$.{name}", f"{ref[:64]!r} must be 1-128 letters, digits, '.', '_', ':' or '-'"))
    return errors


def _is_identifier(text: str) -> bool:
    try:
        msgspec.convert(text, Identifier)
    except msgspec.ValidationError:
        return False
    return True


# ── the submission, handed to the partition's owner ────────────────────────────────────


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
