"""The one place a command error gets its HTTP status, and the checks of a principal's scopes.

The routes raise the API's errors (``blackboard.schemas.errors``) for what is wrong with the request
itself (its media type, its credentials' scopes, its headers); what the command side raises (a
``CommandError``) becomes one with the status ``status_of`` gives it. The wiring answers every one of
them as a problem document.
"""

from __future__ import annotations

from blackboard.command_api.errors import CommandError, IdempotencyKeyReused, NodeNotFound, NodeUnavailable
from blackboard.domain.decoding import InvalidCommand
from blackboard.schemas.auth import ADMIN, READ, WRITE, Principal, write_scope
from blackboard.schemas.errors import (
    ApiError,
    Forbidden,
    InvalidRequest,
    MalformedJson,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)

#: The name the command routes know the API's error by.
HttpError = ApiError

__all__ = ["Forbidden", "HttpError", "InvalidRequest", "MalformedJson", "NotFound", "PayloadTooLarge",
           "UnsupportedMediaType", "http_error", "invalid_command", "missing_scope", "require_read",
           "require_write", "status_of"]

#: Command errors whose status is not the rule's (503 when a retry can help, else 422).
_STATUS: dict[type[CommandError], int] = {IdempotencyKeyReused: 422, NodeNotFound: 404, NodeUnavailable: 409}


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


def http_error(exc: CommandError) -> ApiError:
    """The HTTP answer to a command error."""
    return ApiError(exc.message, code=exc.code, status=status_of(exc))


def invalid_command(exc: InvalidCommand) -> ApiError:
    """The HTTP answer to a body that is not a command: 400 when it is not JSON, else 422."""
    return ApiError(str(exc), errors=exc.errors, code=exc.code, status=400 if exc.code == "malformed_json" else 422)
