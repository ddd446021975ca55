"""An external PostgreSQL that goes away: liveness fails once it has been away longer than the recovery time
(the process cannot start it), and everything answers again once it is back."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx

from blackboard.embedded import stop_embedded_postgres
from tests.integration.harness import command, running, settings_for
from tests.services import EmbeddedPostgres


async def _status_within(client: httpx.AsyncClient, path: str, status: int, seconds: float) -> float:
    """Seconds until ``path`` answers ``status``; fails after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if (await client.get(path)).status_code == status:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} did not answer {status} within {seconds} s")


async def test_liveness_fails_when_postgres_stays_away_and_returns_with_it() -> None:
    server = EmbeddedPostgres()  # a server of its own: this test stops it
    try:
        settings = settings_for("postgres", pg_url=server.url, topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
                                postgres_recovery_seconds=2.0)
        async with running(settings) as (client, _):
            assert (await client.get("/health/live")).status_code == 200
            stop_embedded_postgres(server.dir / "data")
            # Not started by this process: it cannot restart it, so after the recovery time it asks to be restarted.
            await _status_within(client, "/health/live", 503, 10)
            assert (await client.get("/health/live")).json() == {"status": "not_live", "reason": "postgres_unreachable"}
            await asyncio.to_thread(server.server.ensure_postgres_running)
            await _status_within(client, "/health/live", 200, 10)
            await _status_within(client, "/health/ready", 200, 30)
            made = await command(client, "project.create", "project:p-1",
                                 {"title": "t", "currency": "EUR", "budget_total": "1.00"})
            assert made.status_code == 200, made.text
            read = await client.get("/v1/projects/p-1", params={"consistent_with": made.json()["position"]})
            assert read.status_code == 200, read.text
    finally:
        server.stop()
