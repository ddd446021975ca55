"""The HTTP app of a runtime: its routes by role, authentication, rate limits, one error shape, and health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusController

from blackboard import __version__
from blackboard.app import Runtime
from blackboard.auth import guarded_paths
from blackboard.command_api.checkpoint_http import ROUTES as CHECKPOINT_COMMAND_ROUTES
from blackboard.command_api.checkpoint_http import CheckpointLimits
from blackboard.command_api.cluster_http import ROUTES as CLUSTER_COMMAND_ROUTES
from blackboard.command_api.http import ROUTES as COMMAND_ROUTES
from blackboard.command_api.rollback_http import ROUTES as ROLLBACK_ROUTES
from blackboard.events.collector import freeze_long_lived
from blackboard.http_metrics import prometheus_config
from blackboard.openapi import SECURITY, SECURITY_REQUIREMENTS, ContractJson, LocalSwagger
from blackboard.pools import request_reads
from blackboard.problems import EXCEPTION_HANDLERS
from blackboard.query_api.checkpoint_http import ROUTES as CHECKPOINT_ROUTES
from blackboard.query_api.cluster_http import ROUTES as CLUSTER_ROUTES
from blackboard.query_api.document_http import ROUTES as DOCUMENT_ROUTES
from blackboard.query_api.http import ROUTES as QUERY_ROUTES
from blackboard.query_api.list_http import ROUTES as LIST_ROUTES
from blackboard.query_api.project_http import ROUTES as PROJECT_ROUTES
from blackboard.query_api.runs_http import ROUTES as RUN_ROUTES
from blackboard.query_api.stream_http import ROUTES as STREAM_ROUTES
from blackboard.schemas.auth import ADMIN, READ
from blackboard.schemas.errors import RETRY_AFTER_SECONDS
from blackboard.startup import started
from blackboard.tenant_answers import tenant_answers
from blackboard.tracing import http_middleware

#: Where the OpenAPI document (``openapi.json``) and its docs UI are served.
SCHEMA_PATH = "/schema"


def build_app(runtime: Runtime, *, manage_lifecycle: bool = True) -> Litestar:
    """The HTTP app of a runtime: command routes, query routes and health, by the runtime's roles."""
    gate = runtime.gate

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if manage_lifecycle:
            async with started(runtime.settings, runtime.postgres_url):  # waits for the dependencies first
                await runtime.start()
            freeze_long_lived()  # a served process: what it holds now lives as long as it does
        try:
            yield
        finally:
            if manage_lifecycle:
                await runtime.stop()

    prometheus = prometheus_config()
    routes: list[Any] = [health_live, health_ready, PrometheusController]
    middleware: list[Any] = [*http_middleware(), prometheus.middleware, tenant_answers]
    if runtime.settings.protect_metrics_and_schema:
        middleware.append(guarded_paths(gate, {"/metrics": ADMIN, SCHEMA_PATH: READ}))
    if runtime.settings.read_row_security:
        middleware.append(request_reads)
    if "command" in runtime.roles:
        routes += [*COMMAND_ROUTES, *CHECKPOINT_COMMAND_ROUTES, *CLUSTER_COMMAND_ROUTES, *ROLLBACK_ROUTES]
    if "query" in runtime.roles:
        routes += [*QUERY_ROUTES, *LIST_ROUTES, *STREAM_ROUTES, *PROJECT_ROUTES, *DOCUMENT_ROUTES, *CHECKPOINT_ROUTES,
                   *CLUSTER_ROUTES, *RUN_ROUTES]
    return Litestar(
        route_handlers=routes,
        dependencies={"principal": Provide(gate.http)},
        exception_handlers=EXCEPTION_HANDLERS,
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
    if status == "not_ready":
        return Response(body, status_code=503, media_type="application/json",
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    return Response(body, media_type="application/json")
