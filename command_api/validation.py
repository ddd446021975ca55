"""From the raw body of ``POST /v1/commands`` to a typed command, or the exact reasons it is not one.

The body goes through the one front of every route with a body (``blackboard.schemas.decoding``:
parse, walk, convert); then the command's own checks: a known type, a stream of its category,
references that are identifiers, and the payload converted to its command's Struct.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import NamedTuple

import msgspec

from blackboard.schemas import decoding
from blackboard.schemas.api import CommandRequest, FieldError
from blackboard.schemas.registry import COMMAND_TYPES
from blackboard.schemas.task import CreateTask
from blackboard.schemas.types import Identifier

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
