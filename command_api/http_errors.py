"""The command side's HTTP errors, and the one place a command error gets its HTTP status.

The routes raise an ``HttpError`` for what is wrong with the request itself (its media type, its
credentials' mode, its headers); what the command side raises (a ``CommandError``) is answered by
``on_command_error`` with the status ``status_of`` gives it. Every error body is an ``ErrorBody``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response
from litestar.types import ExceptionHandlersMap

from blackboard.command_api.errors import CommandError, IdempotencyKeyReused, NodeNotFound, NodeUnavailable
from blackboard.domain.decoding import InvalidCommand
from blackboard.schemas.api import ErrorBody, FieldError
from blackboard.schemas.auth import ADMIN, READ, WRITE, Principal, write_scope

JSON = "application/json"

#: Command errors whose status is not the rule's (503 when a retry can help, else 422).
_STATUS: dict[type[CommandError], int] = {IdempotencyKeyReused: 422, NodeNotFound: 404, NodeUnavailable: 409}


class HttpError(Exception):
    """An HTTP error a command route answers with an ``ErrorBody``: it carries its status and code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, errors: list[FieldError] | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, errors=self.errors)


class InvalidRequest(HttpError):
    status, code = 422, "invalid_request"


class Forbidden(HttpError):
    status, code = 403, "forbidden"


class NotFound(HttpError):
    status, code = 404, "not_found"


class UnsupportedMediaType(HttpError):
    status, code = 415, "unsupported_media_type"


class PayloadTooLarge(HttpError):
    status, code = 413, "payload_too_large"


def missing_scope(scope: str, what: str) -> Forbidden:
    """The 403 of a principal without ``scope``: the code says so, the message and the challenge name the scope."""
    wider = f" (or '{WRITE}')" if scope.startswith(WRITE + ":") else ""
    return Forbidden(f"{what} needs the scope '{scope}'{wider}", code="insufficient_scope",
                     headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})


def require_write(principal: Principal, category: str | None, what: str) -> None:
    """403 ``insufficient_scope`` unless ``principal`` may send the commands of ``category`` (``None``: of every
    category, as a rollback may)."""
    if category is None:
        if not {WRITE, ADMIN} & principal.scopes:
            raise missing_scope(WRITE, what)
    elif not principal.may_write(category):
        raise missing_scope(write_scope(category), what)


def require_read(principal: Principal, what: str) -> None:
    """403 ``insufficient_scope`` unless ``principal`` may read."""
    if not principal.can_read:
        raise missing_scope(READ, what)


def status_of(exc: CommandError) -> int:
    """The HTTP status of a command error: 503 when a retry with the same ``command_id`` can help, else 422."""
    for kind in type(exc).__mro__:
        if kind in _STATUS:
            return _STATUS[kind]
    return 503 if exc.retriable else 422


def http_error(exc: CommandError) -> HttpError:
    """The HTTP answer to a command error."""
    return HttpError(exc.message, code=exc.code, status=status_of(exc))


def invalid_command(exc: InvalidCommand) -> HttpError:
    """The HTTP answer to a body that is not a command: 400 when it is not JSON, else 422."""
    return HttpError(str(exc), errors=exc.errors, code=exc.code, status=400 if exc.code == "malformed_json" else 422)


def on_http_error(_: Request[Any, Any, Any], exc: HttpError) -> Response[bytes]:
    return Response(msgspec.json.encode(exc.body()), status_code=exc.status, media_type=JSON, headers=exc.headers)


def on_command_error(request: Request[Any, Any, Any], exc: CommandError) -> Response[bytes]:
    return on_http_error(request, http_error(exc))


#: For the app: how the command routes' errors are answered.
EXCEPTION_HANDLERS: ExceptionHandlersMap = {HttpError: on_http_error, CommandError: on_command_error}
