"""The shapes of the HTTP API: the command request, its outcomes and the error bodies."""

from __future__ import annotations

from typing import Any

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


class ApiError(Exception):
    """An HTTP error the API answers with an ``ErrorBody``: it carries its status and code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, errors: list[FieldError] | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, errors=self.errors)


class InvalidRequest(ApiError):
    status, code = 422, "invalid_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class ServiceUnavailable(ApiError):
    """A dependency is down or a bounded wait ran out; trying again later can help."""

    status, code = 503, "unavailable"
