"""The HTTP app of a runtime: its routes by role, authentication, rate limits, one error shape, and health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from blackboard import __version__
from blackboard.app import Runtime
from blackboard.auth import guarded_paths
from blackboard.command_api.checkpoint_http import ROUTES as CHECKPOINT_COMMAND_ROUTES
from blackboard.command_api.checkpoint_http import CheckpointLimits
from blackboard.command_api.cluster_http import ROUTES as CLUSTER_COMMAND_ROUTES
from blackboard.command_api.http import ROUTES as COMMAND_ROUTES
from blackboard.command_api.http_errors import EXCEPTION_HANDLERS as COMMAND_EXCEPTION_HANDLERS
from blackboard.command_api.rollback_http import ROUTES as ROLLBACK_ROUTES
from blackboard.openapi import SECURITY, SECURITY_REQUIREMENTS, ContractJson, LocalSwagger
from blackboard.query_api.checkpoint_http import ROUTES as CHECKPOINT_ROUTES
from blackboard.query_api.cluster_http import ROUTES as CLUSTER_ROUTES
from blackboard.query_api.document_http import ROUTES as DOCUMENT_ROUTES
from blackboard.query_api.errors import ApiError
from blackboard.query_api.http import ROUTES as QUERY_ROUTES
from blackboard.query_api.list_http import ROUTES as LIST_ROUTES
from blackboard.query_api.project_http import ROUTES as PROJECT_ROUTES
from blackboard.query_api.runs_http import ROUTES as RUN_ROUTES
from blackboard.query_api.stream_http import ROUTES as STREAM_ROUTES
from blackboard.schemas.api import ErrorBody, FieldError
from blackboard.startup import started
from blackboard.tracing import http_middleware

log = structlog.get_logger(__name__)

#: Where the OpenAPI document (``openapi.json``) and its docs UI are served.
SCHEMA_PATH = "/schema"


def _error(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json",
                    headers=headers or {})


def _on_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return _error(exc.status, exc.body(), exc.headers)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
               429: "rate_limited", 503: "unavailable"}


def _on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    errors: list[FieldError] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = [FieldError(path=str(e.get("key", "")), message=str(e.get("message", ""))) for e in exc.extra
                  if isinstance(e, dict)]
        return _error(422, ErrorBody("invalid_request", "the request's parameters are not valid", errors))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 429:
        # RFC 9110 Retry-After, from the limiter's own reset time.
        headers.setdefault("Retry-After", headers.get("RateLimit-Reset", "1"))
    return _error(exc.status_code, ErrorBody(code, str(exc.detail)), headers)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Never leak a stack trace, SQL or a secret: log it (with what was asked; the request id comes with the
    # request's log context), answer a bare code.
    log.error("http.unexpected", method=request.method, path=request.url.path, error=repr(exc), exc_info=exc)
    return _error(500, ErrorBody("internal_error", "an unexpected error occurred; it has been logged"))


def build_app(runtime: Runtime, *, manage_lifecycle: bool = True) -> Litestar:
    """The HTTP app of a runtime: command routes, query routes and health, by the runtime's roles."""
    gate = runtime.gate

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if manage_lifecycle:
            async with started(runtime.settings, runtime.postgres_url):  # waits for the dependencies first
                await runtime.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                await runtime.stop()

    prometheus = PrometheusConfig(app_name="blackboard", prefix="blackboard_http", group_path=True,
                                  exclude=["/metrics", "/health"])
    routes: list[Any] = [health_live, health_ready, PrometheusController]
    middleware: list[Any] = [*http_middleware(), prometheus.middleware]
    if runtime.settings.protect_metrics_and_schema:
        middleware.append(guarded_paths(gate, ("/metrics", SCHEMA_PATH)))
    if "command" in runtime.roles:
        routes += [*COMMAND_ROUTES, *CHECKPOINT_COMMAND_ROUTES, *CLUSTER_COMMAND_ROUTES, *ROLLBACK_ROUTES]
    if "query" in runtime.roles:
        routes += [*QUERY_ROUTES, *LIST_ROUTES, *STREAM_ROUTES, *PROJECT_ROUTES, *DOCUMENT_ROUTES, *CHECKPOINT_ROUTES,
                   *CLUSTER_ROUTES, *RUN_ROUTES]
    return Litestar(
        route_handlers=routes,
        dependencies={"principal": Provide(gate.http)},
        exception_handlers={ApiError: _on_api_error, **COMMAND_EXCEPTION_HANDLERS, HTTPException: _on_http_error,
                            Exception: _on_unexpected},
        lifespan=[lifespan],
        middleware=middleware,
        request_max_body_size=runtime.settings.max_body_bytes,
        state=State({"runtime": runtime, "checkpoint_limits": CheckpointLimits(
            runtime.settings.checkpoint_max_bytes, runtime.settings.checkpoint_inline_bytes,
            runtime.settings.blob_schema)}),
        openapi_config=OpenAPIConfig(title="Blackboard", version=__version__, path=SCHEMA_PATH, components=SECURITY,
                                     security=SECURITY_REQUIREMENTS,
                                     render_plugins=[ContractJson(), LocalSwagger(SCHEMA_PATH)]),
        debug=False,
        logging_config=None,  # the process's logs are JSON (blackboard/logs.py): no text handler on the root
    )


@get("/health/live", tags=["health"], include_in_schema=False)
async def health_live(request: Request[None, None, State]) -> Response[bytes]:
    """Live while the process can recover by itself; 503 once PostgreSQL has been away too long (restart me)."""
    runtime: Runtime = request.app.state.runtime
    live = runtime.live()
    body = {"status": "live"} if live else {"status": "not_live", "reason": "postgres_unreachable"}
    return Response(msgspec.json.encode(body), status_code=200 if live else 503, media_type="application/json")


@get("/health/ready", tags=["health"], include_in_schema=False)
async def health_ready(request: Request[None, None, State]) -> Response[bytes]:
    """Ready when PostgreSQL and the log answer; ``degraded`` while the cache is failing over to PostgreSQL.

    The answer names each dependency's state, and the live generation of the read models.
    """
    runtime: Runtime = request.app.state.runtime
    deps: dict[str, str] = {}
    try:
        assert runtime.pool is not None
        await asyncio.wait_for(runtime.pool.fetchval("SELECT 1"), 2.0)
        deps["postgres"] = "up"
    except Exception:
        deps["postgres"] = "down"
    try:
        assert runtime.log is not None
        await asyncio.wait_for(runtime.log.partition_count(runtime.settings.events_topic), 2.0)
        deps["log"] = "up"
    except Exception:
        deps["log"] = "down"
    if runtime.redis is not None:
        try:
            await runtime.redis.ping()
            deps["redis"] = "up"
        except Exception:
            deps["redis"] = "down"
    status = "ready" if deps["postgres"] == deps["log"] == "up" else "not_ready"
    if status == "ready" and deps.get("redis") == "down":
        status = "degraded"
    generation = runtime.generation.number if runtime.generation is not None else None
    body = msgspec.json.encode({"status": status, "dependencies": deps, "generation": generation})
    return Response(body, status_code=200 if status != "not_ready" else 503, media_type="application/json")
