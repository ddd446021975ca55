"""``blackboard worker``: a demo worker that claims tasks and runs them."""

from __future__ import annotations

import asyncio
from typing import Annotated

import cyclopts

from blackboard.cli.base import ServerUrl, app, console, server_url


@app.command
def worker(
    *,
    url: ServerUrl = None,
    node: str,
    skills: list[str] | None = None,
    capacity: int = 1,
    ttl_seconds: int = 30,
    api_key: Annotated[str | None, cyclopts.Parameter(env_var="BLACKBOARD_API_KEY")] = None,
) -> None:
    """Run a demo worker: register --node, heartbeat, claim tasks and run them (each sleeps payload.seconds).

    A starting point for a real one: ``blackboard_client.worker.Worker`` with your own handler (the worker
    loop lives in the client distribution, ``blackboard-client``).
    """
    import socket

    try:
        from blackboard_client.worker import Worker, sleeping_handler
    except ImportError:
        console.print("[red]the worker loop is in the client: pip install blackboard-client (clients/python)[/red]")
        raise SystemExit(2) from None

    url = server_url(url)
    w = Worker(url, node, sleeping_handler, skills=skills or [], capacity=capacity, ttl_seconds=ttl_seconds,
               hostname=socket.gethostname(), api_key=api_key)
    console.print(f"worker {node} → {url} (skills: {', '.join(w.skills) or 'none'}, capacity {capacity})")
    asyncio.run(w.run())
