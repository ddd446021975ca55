"""``POST /v1/commands``: decode, authenticate, hand to the partition owner, answer the outcome."""

from __future__ import annotations

from typing import Annotated

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from blackboard.command_api.cluster_http import unknown_dependencies
from blackboard.command_api.errors import CommandError
from blackboard.command_api.http_errors import (
    HttpError,
    InvalidRequest,
    NotFound,
    http_error,
    invalid_command,
    missing_scope,
)
from blackboard.command_api.owner import submission
from blackboard.command_api.service import CommandService
from blackboard.domain.decoding import InvalidCommand, require_json, validate_command
from blackboard.events.tracing import current_trace_headers
from blackboard.schemas.api import Accepted, DryRun, ErrorBody, Outcome, Rejected
from blackboard.schemas.auth import WRITE, WRITES, Principal
from blackboard.schemas.registry import COMMAND_TYPES, SYSTEM_COMMANDS
from blackboard.schemas.task import CreateTask
from blackboard.schemas.tenancy import scope_id

JSON = "application/json"
ROUTE = "/v1/commands"

tracer = trace.get_tracer(__name__)


_ERRORS = {
    400: ResponseSpec(ErrorBody, description="malformed_json: the body is not JSON, or JSON we refuse"),
    401: ResponseSpec(ErrorBody, description="missing_credentials / invalid_credentials"),
    403: ResponseSpec(ErrorBody, description="insufficient_scope: the message names the scope the command needs"),
    413: ResponseSpec(ErrorBody, description="payload_too_large"),
    415: ResponseSpec(ErrorBody, description="unsupported_media_type"),
    422: ResponseSpec(ErrorBody, description="invalid_command (with the JSON path of each bad field), "
                                             "idempotency_key_reused, unknown_dependency, self_dependency"),
    503: ResponseSpec(ErrorBody, description="log_unavailable / not_owner / outcome_pending: "
                                             "retry with the same command_id"),
}


# ResponseSpec's annotation admits one class, not a union of them, which Litestar handles all the same.
@post(ROUTE, status_code=200, summary="Decide a command", tags=["commands"],
      responses={200: ResponseSpec(Accepted | DryRun,  # type: ignore[arg-type]
                                   description="accepted: the events and the position token; or, with dry_run, "
                                               "what would happen (nothing appended)"),
                 409: ResponseSpec(Rejected, description="rejected by a rule, with its code"), **_ERRORS},
      opt={WRITES: True})
async def post_command(request: Request[None, None, State], principal: NamedDependency[Principal]) -> Response[bytes]:
    """Decide one command against current state; 200 accepted, 409 rejected by a rule, 4xx bad input.

    A repeated ``command_id`` answers the first outcome again (header ``Idempotent-Replayed: true``)
    and appends nothing; the same id with a different command is refused. Every answer carries the
    ``traceparent`` of the command's span (when there is a trace: a configured tracer, or one given
    in the request's ``traceparent`` header).
    """
    # A trace the caller started (W3C traceparent) goes on; without one this span is a new root.
    with tracer.start_as_current_span(
        f"POST {ROUTE}", context=propagate.extract(request.headers), kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.route": ROUTE},
        record_exception=False, set_status_on_exception=False,
    ) as span:
        try:
            outcome, replayed = await _decide(request, principal)
        except CommandError as exc:
            error = http_error(exc)
            _answered_with(span, exc, error)
            raise error from exc
        except Exception as exc:
            _answered_with(span, exc, exc if isinstance(exc, HttpError) else None)
            raise
        response = _answer(outcome, replayed)
        span.set_attribute("http.response.status_code", response.status_code)
        return response


def _answered_with(span: Span, exc: Exception, answer: HttpError | None) -> None:
    """Mark the span of a request that ends in ``exc``, answered with ``answer`` (``None``: a 500), and give the
    answer the trace's headers."""
    status = answer.status if answer is not None else 500
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    if answer is not None:
        answer.headers.update(_trace_headers())


def _trace_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, for a response."""
    traceparent, tracestate = current_trace_headers()
    headers = {"traceparent": traceparent} if traceparent else {}
    return headers | ({"tracestate": tracestate} if tracestate else {})


async def _decide(request: Request[None, None, State], principal: Principal) -> tuple[Outcome | DryRun, bool]:
    """Validate the request and hand it to its partition's owner; ``(outcome, replayed)``.

    Raises an ``HttpError`` for a request that is refused before it reaches the owner, and a
    ``CommandError`` when the owner did not decide it.
    """
    require_json(request.headers.get("content-type"))
    body = await request.body()
    _require_scope(principal, _type_of(body))
    try:
        valid = validate_command(body)
    except InvalidCommand as exc:
        raise invalid_command(exc) from None
    req = valid.request
    # Again on the type the validation decoded: the first look must never be what lets a command through.
    _require_scope(principal, req.type)
    service: CommandService = request.app.state.runtime.commands
    sub = submission(req, valid.payload, actor=principal.name, tenant=principal.tenant,
                     fingerprint=valid.fingerprint, trace=otel_context.get_current())
    if isinstance(sub.payload, CreateTask) and sub.payload.depends_on:
        missing = unknown_dependencies(service, sub.payload)
        if missing:
            raise InvalidRequest("; ".join(e.message for e in missing), code="unknown_dependency", errors=missing)
    # Every log line while this command is handled names it.
    structlog.contextvars.bind_contextvars(command_id=sub.command_id, correlation_id=sub.correlation_id,
                                           stream=sub.stream, actor=principal.name, tenant=principal.tenant)
    trace.get_current_span().set_attributes({"blackboard.command.id": sub.command_id,
                                             "blackboard.stream": sub.stream})
    return await service.submit(sub)


class _Typed(msgspec.Struct):
    """Only the ``type`` of a command body."""

    type: str = ""


def _type_of(body: bytes) -> str:
    """The ``type`` of a command body, looked at before anything else of it ("" when it cannot be read: the full
    validation then says what is wrong), so that a caller without the right learns nothing of how its command
    would have been judged."""
    try:
        return msgspec.json.decode(body, type=_Typed).type
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return ""


def _require_scope(principal: Principal, command_type: str) -> None:
    """403 ``insufficient_scope`` naming the scope ``command_type`` needs."""
    if command_type in COMMAND_TYPES:
        lacking = principal.missing_for_command(command_type, admin_only=command_type in SYSTEM_COMMANDS)
        if lacking is not None:
            raise missing_scope(lacking, command_type)
    elif not principal.can_write:
        raise missing_scope(WRITE, "sending a command")


def _answer(outcome: Outcome | DryRun, replayed: bool) -> Response[bytes]:
    headers = ({"Idempotent-Replayed": "true"} if replayed else {}) | _trace_headers()
    status = 200 if isinstance(outcome, Accepted | DryRun) else 409
    return Response(msgspec.json.encode(outcome), status_code=status, media_type=JSON, headers=headers)


@get("/v1/commands/{command_id:str}", summary="What became of a command", tags=["commands"])
async def get_command(
    request: Request[None, None, State], principal: NamedDependency[Principal],
    command_id: Annotated[str, PathParameter(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")],
) -> Response[bytes]:
    """The first outcome of ``command_id`` (accepted with its position, or rejected with its code),
    ``{"outcome": "pending"}`` while it is being decided, or 404 ``unknown_command``."""
    service: CommandService = request.app.state.runtime.commands
    outcome = service.outcome_of(scope_id(principal.tenant, command_id))
    if outcome is None:
        raise NotFound(f"no command {command_id!r} has been decided", code="unknown_command")
    if outcome == "pending":
        return Response(b'{"outcome":"pending","command_id":' + msgspec.json.encode(command_id) + b"}",
                        status_code=202, media_type=JSON)
    return Response(msgspec.json.encode(outcome), media_type=JSON)


@get("/v1/partitions", summary="Per-partition state of the command side", tags=["commands"])
async def get_partitions(
    request: Request[None, None, State], principal: NamedDependency[Principal]
) -> dict[str, object]:
    """This process's deciders: its mode and group name, and for every partition it decides the member, the
    epoch it writes at, where its restore ended, the offsets it has reached, the queue depth and the last
    snapshot; with the commands it decided here (fast path) and sent on to their owner (routed)."""
    service: CommandService = request.app.state.runtime.commands
    return {"member": service.member_id, "mode": service.mode, "partitions_total": service.partitions,
            "decided_here": service.local, "routed": service.routed,
            "set_aside": service.intake.set_aside if service.intake is not None else 0,
            "partitions": service.partition_states()}


ROUTES = [post_command, get_command, get_partitions]
