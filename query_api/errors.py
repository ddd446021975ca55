"""The read side's errors: HTTP errors that carry their status and code, answered with an ``ErrorBody``.

The gRPC server maps the same errors to gRPC status codes (``query_api.grpc``).
"""

from __future__ import annotations

from blackboard.schemas.api import ErrorBody, FieldError


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
