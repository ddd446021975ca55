"""kill -9 of an external PostgreSQL under a command load (the PostgreSQL log engine), started again on the same
socket and data directory after ``BLACKBOARD_FAULT_SECONDS``: nothing acknowledged is lost or doubled, no answer
is a 5xx but 503 (with ``Retry-After``), the service reconnects by itself within 30 s, lag returns to 0 and the
read models equal a rebuild of the log.

The server cannot restart an external PostgreSQL (``blackboard.recovery`` only waits for it); the test does,
as an operator's supervisor would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.faults import (
    CLIENTS,
    COMMAND_TIMEOUT,
    FAULT_SECONDS,
    PROJECTS,
    RECOVERY_SECONDS,
    Outcomes,
    acked_between,
    check_invariants,
    create_projects,
    loaded,
    no_5xx_but_503,
    report,
    status,
    until,
)
from tests.integration.harness import serving, settings_for
from tests.services import EmbeddedPostgres

#: How long the load flows before the kill.
FLOWING = 0.5


@pytest.fixture
def external() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own (it kills it), reached only through its URL: external to the server."""
    server = EmbeddedPostgres()
    yield server
    server.stop()


def _postmaster(server: EmbeddedPostgres) -> int:
    return int((server.dir / "data" / "postmaster.pid").read_text().split()[0])


def _start_again(server: EmbeddedPostgres, timeout: float = RECOVERY_SECONDS) -> None:
    """Start the killed server on its data directory and socket; retried while its orphaned backends, which
    outlive a killed postmaster for a moment, still hold the shared memory."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.server.ensure_postgres_running()
            return
        except (subprocess.SubprocessError, AssertionError):
            assert time.monotonic() < deadline, "the killed PostgreSQL did not start again"
            time.sleep(0.2)


async def test_an_external_postgres_killed_under_load(external: EmbeddedPostgres) -> None:
    settings = settings_for("postgres", pg_url=external.url, topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
                            command_timeout_seconds=COMMAND_TIMEOUT)
    seen = Outcomes()
    async with serving(settings) as (client, _, _):
        await create_projects(client, PROJECTS)
        async with loaded(client, seen):
            await asyncio.sleep(FLOWING)  # the kill lands among commands in flight
            os.kill(_postmaster(external), signal.SIGKILL)
            killed = time.monotonic()
            assert await status(client, "/health/live", timeout=3.0) == 200
            await asyncio.sleep(max(0.0, FAULT_SECONDS - (time.monotonic() - killed)))
            await asyncio.to_thread(_start_again, external)
            healed = time.monotonic()
            await until(client, "/health/ready", 200, RECOVERY_SECONDS)
            while acked_between(seen, healed, time.monotonic()) <= 2 * CLIENTS:  # every client acknowledged again
                assert time.monotonic() - healed < RECOVERY_SECONDS, "the load did not flow again"
                await asyncio.sleep(0.05)
        no_5xx_but_503(seen)
        assert set(seen.statuses) <= {200, 409, 503}, seen.statuses
        assert seen.statuses[503] > 0, "the kill was not seen: no command was answered 503"
        assert set(seen.acked) == set(seen.sent), "every command was decided, and accepted"
        first = seen.first_success_after(healed)
        assert first is not None and first - healed < RECOVERY_SECONDS, "no acknowledgement after the restart"
        caught_up = await check_invariants(settings, external.url, set(seen.sent))
    report("postgres-external-kill9", seen, healed, caught_up)
    print(f"down_s={healed - killed:.2f} first_ack_after_kill_s={first - killed:.2f}")
