"""``blackboard up``: the service itself, in one process or as chosen roles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import cyclopts

from blackboard import __version__
from blackboard.cli.base import app, console, load_settings, postgres_url


@app.command
def up(
    *,
    data_dir: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    grpc_port: Annotated[int | None, cyclopts.Parameter(help="serve the gRPC query API on this port (0: any)")] = None,
    role: Annotated[list[str] | None, cyclopts.Parameter(help="command, projector, query (default: all)")] = None,
    insecure: Annotated[bool, cyclopts.Parameter(
        help="listen beyond loopback with no API key or JWKS configured: every caller gets every right")] = False,
) -> None:
    """Run Blackboard in one process: command API, decider, projector and query API.

    With no BLACKBOARD_POSTGRES_URL an embedded PostgreSQL keeps its data in --data-dir; with no
    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS the log is a PostgreSQL table; Redis only when configured. With no
    credential configured it listens on loopback only, unless started with --insecure.
    """
    from blackboard.auth import InsecureBind, check_bind
    from blackboard.logs import configure_logging

    configure_logging()
    settings = load_settings(data_dir=data_dir, host=host, port=port, grpc_port=grpc_port)
    # Before anything is started: a refused bind leaves nothing behind (no embedded PostgreSQL, no topics).
    try:
        unprotected = check_bind(settings, insecure=insecure)
    except InsecureBind as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None
    if unprotected:
        console.print("[bold red]WARNING: --insecure: no authentication, every caller has every right[/]")
    from blackboard.app import Runtime, roles_from, serve
    from blackboard.http_app import build_app
    from blackboard.tracing import configure_tracing

    configure_tracing()
    roles = roles_from(role or [])
    # The projector beside the other roles gets a process (and a core) of its own: the HTTP process decides.
    apart = settings.projector_process and "projector" in roles and len(roles) > 1
    runtime = Runtime(settings, postgres_url(settings, create=True), roles=roles - {"projector"} if apart else roles,
                      projector_apart=apart)
    engine = "kafka" if settings.kafka_bootstrap_servers else "postgres"
    console.print(f"[bold]blackboard {__version__}[/] log={engine} roles={','.join(sorted(roles))} "
                  f"→ http://{settings.host}:{settings.port}  (OpenAPI: /schema)"
                  + (f", gRPC {settings.host}:{settings.grpc_port}" if settings.grpc_port is not None else ""))
    # A stopping process lets its requests finish; a routed command may wait for a partition that is
    # changing hands (its own leaving causes that), so it gets its route timeout.
    graceful = 5.0 if settings.decider_mode == "all" else settings.route_timeout_seconds + 5
    serve(build_app(runtime), host=settings.host, port=settings.port, log_level="warning",
          timeout_graceful_shutdown=int(graceful))


@app.command
def openapi() -> None:
    """Print the OpenAPI document of the HTTP API (what /schema/openapi.json serves), starting nothing.

    For generating clients in a build: no PostgreSQL, log or port is needed.
    """
    from blackboard.app import Runtime
    from blackboard.config import Settings
    from blackboard.http_app import build_app
    from blackboard.openapi import document

    runtime = Runtime(Settings(), "postgresql://unused@127.0.0.1:1/unused")  # never connected to
    sys.stdout.buffer.write(document(build_app(runtime, manage_lifecycle=False)) + b"\n")
