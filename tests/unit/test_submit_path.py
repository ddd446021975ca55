"""The one submit path's ``submission``, the command errors' HTTP statuses and their trip through command-results."""

from __future__ import annotations

import msgspec
import pytest

from blackboard.command_api.errors import (
    CommandError,
    IdempotencyKeyReused,
    NodeNotFound,
    NodeUnavailable,
    NotOwner,
    StreamUnreadable,
    Unavailable,
)
from blackboard.command_api.http_errors import http_error, status_of
from blackboard.command_api.owner import submission
from blackboard.command_api.results import StoredOutcome, refusal_body, refusal_of
from blackboard.domain.decoding import command_fingerprint, validate_command
from blackboard.schemas.api import CommandRequest
from blackboard.schemas.project import AddCost


async def test_submission_fills_the_ids_the_request_leaves_out() -> None:
    request = CommandRequest("project.add_cost", "project:p-1", {"amount": "1.5", "reason": "r"})
    sub = submission(request, AddCost(amount="1.5", reason="r"), actor="alice")
    assert sub.command_id and sub.request.command_id == sub.command_id
    assert (sub.correlation_id, sub.causation_id) == (sub.command_id, sub.command_id)
    assert (sub.category, sub.stream, sub.command_type, sub.actor) == ("project", "project:p-1", "project.add_cost",
                                                                        "alice")
    assert sub.fingerprint == command_fingerprint(request)


async def test_submission_keeps_what_the_request_names() -> None:
    valid = validate_command(msgspec.json.encode({
        "type": "project.add_cost", "stream": "project:p-1", "command_id": "c-1", "correlation_id": "k-1",
        "expected_version": 3, "dry_run": True, "payload": {"amount": "2", "reason": "r"}}))
    sub = submission(valid.request, valid.payload, actor="bob", fingerprint=valid.fingerprint, source_offset=7)
    assert (sub.command_id, sub.correlation_id, sub.causation_id) == ("c-1", "k-1", "c-1")
    assert (sub.expected_version, sub.dry_run, sub.source_offset) == (3, True, 7)
    assert sub.fingerprint == valid.fingerprint and sub.request is valid.request


@pytest.mark.parametrize(("error", "status", "code"), [
    (NotOwner("moved"), 503, "not_owner"),
    (Unavailable("down", code="log_unavailable"), 503, "log_unavailable"),
    (Unavailable("slow", code="route_timeout"), 503, "route_timeout"),
    (StreamUnreadable("hole"), 503, "stream_unreadable"),
    (IdempotencyKeyReused("c-1"), 422, "idempotency_key_reused"),
    (NodeNotFound("who"), 404, "node_not_found"),
    (NodeUnavailable("asleep", code="node_offline"), 409, "node_offline"),
])
def test_each_command_error_has_its_status(error: CommandError, status: int, code: str) -> None:
    answered = http_error(error)
    assert (status_of(error), answered.status, answered.code, answered.message) == (status, status, code,
                                                                                   error.message)


@pytest.mark.parametrize("error", [IdempotencyKeyReused("c-1"), StreamUnreadable("hole"),
                                   Unavailable("down", code="log_unavailable")])
def test_a_refusal_is_raised_again_as_it_was_in_another_process(error: CommandError) -> None:
    stored = StoredOutcome("c-1", "project:p-1", "fp", error=refusal_body(error))
    body = msgspec.json.decode(msgspec.json.encode(stored), type=StoredOutcome).error
    assert body is not None
    again = refusal_of("c-1", body)
    assert (type(again), again.code, again.message, again.retriable) == (type(error), error.code, error.message,
                                                                         error.retriable)


def test_a_refusal_written_by_an_earlier_build_still_decodes() -> None:
    raw = (b'{"command_id":"c-1","stream":"s:1","fingerprint":"f",'
           b'"error":{"status":422,"code":"idempotency_key_reused","message":"m"}}')
    stored = msgspec.json.decode(raw, type=StoredOutcome)
    assert stored.error is not None and isinstance(refusal_of("c-1", stored.error), IdempotencyKeyReused)
