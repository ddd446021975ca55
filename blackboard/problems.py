"""Every error of the HTTP app answered in one shape: an RFC 9457 problem document.

The API's own errors (``blackboard.schemas.errors``), the command side's (``CommandError``, given its
status by ``command_api.http_errors``), the framework's (an unknown route, a method not allowed, a body
too large, a parameter refused, a rate limit) and anything unexpected all leave as
``application/problem+json`` with the same members; every 503 and 429 says when to come back
(``Retry-After``, whole seconds).
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from blackboard.command_api.errors import CommandError
from blackboard.command_api.http_errors import http_error
from blackboard.schemas.api import ErrorBody, FieldError
from blackboard.schemas.errors import PROBLEM_JSON, RETRY_AFTER_SECONDS, ApiError, problem, retryable

log = structlog.get_logger(__name__)

#: The code of an error the framework raised, by its status.
FRAMEWORK_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                   405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
                   429: "rate_limited", 500: "internal_error", 503: "unavailable"}


def answer(body: ErrorBody, headers: dict[str, str] | None = None) -> Response[bytes]:
    """The HTTP answer carrying ``body``; with ``Retry-After`` when the request may be tried again."""
    headers = dict(headers or {})
    if retryable(body.status):
        given = [headers.pop(k) for k in [k for k in headers if k.lower() == "retry-after"]]
        headers["Retry-After"] = _whole_seconds(given[0] if given else None)
    return Response(msgspec.json.encode(body), status_code=body.status, media_type=PROBLEM_JSON, headers=headers)


def _whole_seconds(value: str | None) -> str:
    """``Retry-After`` as RFC 9110's delay-seconds: a non-negative integer (the default when unknown or not a
    number)."""
    try:
        return str(max(0, int(float(value)))) if value is not None else str(RETRY_AFTER_SECONDS)
    except ValueError:
        return str(RETRY_AFTER_SECONDS)


def on_api_error(request: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return answer(exc.body(request.url.path), exc.headers)


def on_command_error(request: Request[Any, Any, Any], exc: CommandError) -> Response[bytes]:
    return on_api_error(request, http_error(exc))


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """An error the framework raised, in our shape: a refused parameter or body is 422 ``invalid_request``."""
    path = request.url.path
    if isinstance(exc, ValidationException):
        refused = [e for e in exc.extra if isinstance(e, dict)] if isinstance(exc.extra, list) else []
        errors = [FieldError(path=_json_path(e), message=str(e.get("message", ""))) for e in refused]
        body = any(e.get("source") == "body" for e in refused)
        detail = "the request's body is not valid" if body else "the request's parameters are not valid"
        return answer(problem(422, "invalid_request", detail, errors, path))
    headers = dict(exc.headers or {})
    status = exc.status_code
    if status == 429:
        # The limiter's own reset time, in seconds (RateLimit-Reset).
        headers["Retry-After"] = headers.get("RateLimit-Reset", str(RETRY_AFTER_SECONDS))
    return answer(problem(status, FRAMEWORK_CODES.get(status, "http_error"), _detail(exc, request), [], path),
                  headers)


def _detail(exc: HTTPException, request: Request[Any, Any, Any]) -> str:
    """What the framework's error means for this request, in a sentence."""
    if exc.status_code == 404:
        return f"no route {request.url.path!r}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("allow", (exc.headers or {}).get("Allow", ""))
        return f"{request.method} is not allowed on {request.url.path!r}" + (f"; allowed: {allowed}" if allowed else "")
    return str(exc.detail)


def _json_path(error: dict[str, Any]) -> str:
    """The JSON path of a parameter or body member the framework refused (``$`` for the body itself)."""
    key = str(error.get("key", ""))
    if error.get("source") != "body":
        return key or "$"
    # The framework names the body itself ``data`` (the handler's argument) and a member by its path.
    return "$" if key in ("", "data") else "$" + key.removeprefix("$") if key.startswith("$") else f"$.{key}"


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Never leak a stack trace, SQL or a secret: log it (with what was asked; the request id comes with the
    # request's log context), answer a bare code.
    log.error("http.unexpected", method=request.method, path=request.url.path, error=repr(exc), exc_info=exc)
    return answer(problem(500, "internal_error", "an unexpected error occurred; it has been logged",
                          instance=request.url.path))


#: For the app: how every error is answered.
EXCEPTION_HANDLERS: ExceptionHandlersMap = {ApiError: on_api_error, CommandError: on_command_error,
                                            HTTPException: on_http_exception, Exception: on_unexpected}
