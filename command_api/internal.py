"""Commands sent from inside a process (the process managers): the same validation and owner as HTTP."""

from __future__ import annotations

from typing import Any

import msgspec

from blackboard.command_api.owner import Submission
from blackboard.command_api.service import CommandService
from blackboard.command_api.validation import validate_command
from blackboard.schemas.api import DryRun, Outcome


async def submit(service: CommandService, *, stream: str, type_: str, payload: dict[str, Any], command_id: str,
                 actor: str, correlation_id: str = "", causation_id: str = "") -> Outcome:
    """Validate the command exactly as ``POST /v1/commands`` does and decide it; its outcome.

    Raises ``InvalidCommand`` for a command that is not valid (a bug of the sender, never retried)
    and ``ServiceUnavailable`` when the owner could not decide it (retry with the same id).
    """
    body: dict[str, Any] = {"type": type_, "stream": stream, "command_id": command_id, "payload": payload}
    if correlation_id:
        body["correlation_id"] = correlation_id
    if causation_id:
        body["causation_id"] = causation_id
    valid = validate_command(msgspec.json.encode(body))
    sub = Submission(category=valid.category, stream=stream, command_type=type_, payload=valid.payload,
                     command_id=command_id, fingerprint=valid.fingerprint, actor=actor, request=valid.request,
                     correlation_id=correlation_id or command_id, causation_id=causation_id or command_id,
                     expected_version=None)
    outcome, _ = await service.submit(sub)
    assert not isinstance(outcome, DryRun)  # dry_run is never set here
    return outcome
