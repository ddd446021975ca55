"""PostgreSQL or the broker on a test host of its own (a network namespace reached over a veth pair,
``tests/integration/netns.py``), cut off under a command load by dropping every frame silently, then reachable
again: nothing acknowledged is lost or doubled, no answer is a 5xx but 503 with ``Retry-After``, the service
recovers by itself within 30 s, lag returns to 0 and the read models equal a rebuild of the log.

Unlike the proxy of ``test_fault_unreachable`` the kernel holds the connections here: TCP retransmits with its
back-off while the host is cut off, so recovery includes the wait for the next retransmission.
``BLACKBOARD_FAULT_SECONDS`` sets how long each cut lasts (2 s here; the nightly run sets 20). Needs root.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from blackboard.config import Settings
from tests.integration.faults import (
    COMMAND_TIMEOUT,
    FAULT_SECONDS,
    PROJECTS,
    RECOVERY_SECONDS,
    SETTLE,
    Outcomes,
    acked_between,
    answered_and_recovered,
    check_invariants,
    create_projects,
    loaded,
    report,
    status,
    until,
)
from tests.integration.harness import serving, settings_for
from tests.integration.netns import NetnsHost, missing_capability, start_broker, start_postgres, workdir


@pytest.fixture
def host() -> Iterator[NetnsHost]:
    """A network namespace of this test's own, removed with everything started in it, also after a failure."""
    if (missing := missing_capability()) is not None:
        pytest.skip(missing)
    try:
        made = NetnsHost()
    except RuntimeError as exc:  # root, but the kernel refuses (no veth, no namespaces): ip's own words
        pytest.skip(f"cannot create a network namespace and a veth pair here: {exc}")
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def scratch() -> Iterator[Path]:
    made = workdir()
    yield made
    shutil.rmtree(made, ignore_errors=True)


async def _cut_for(host: NetnsHost, client_seen: Outcomes) -> float:
    """Cut ``host`` off for ``FAULT_SECONDS``; when it was healed. Nothing may be acknowledged in between (but
    what was already on its way)."""
    host.cut()
    cut = time.monotonic()
    await asyncio.sleep(FAULT_SECONDS)
    host.heal()
    healed = time.monotonic()
    assert acked_between(client_seen, cut + SETTLE, healed) == 0, "acknowledged while the host was cut off"
    return healed


async def test_postgres_on_a_cut_off_host(host: NetnsHost, scratch: Path, topic_prefix: str, redis_url: str,
                                          redis_prefix: str) -> None:
    pg_url = start_postgres(host, scratch)
    settings: Settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                                      redis_prefix=redis_prefix,
                                      command_timeout_seconds=COMMAND_TIMEOUT)
    seen = Outcomes()
    async with serving(settings) as (client, _, _):
        await create_projects(client, PROJECTS)
        async with loaded(client, seen):
            healed = await _cut_for(host, seen)
            assert await status(client, "/health/live", timeout=3.0) == 200
            await until(client, "/health/ready", 200, RECOVERY_SECONDS)
        answered_and_recovered(seen, healed)
        caught_up = await check_invariants(settings, pg_url, set(seen.sent))
    report("postgres-netns", seen, healed, caught_up)


async def test_the_broker_on_a_cut_off_host(host: NetnsHost, pg_url: str, topic_prefix: str, redis_url: str,
                                            redis_prefix: str) -> None:
    bootstrap = start_broker(host)
    settings: Settings = settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=bootstrap,
                                      redis_url=redis_url, redis_prefix=redis_prefix,
                                      command_timeout_seconds=COMMAND_TIMEOUT)
    seen = Outcomes()
    async with serving(settings) as (client, _, _):
        await create_projects(client, PROJECTS)
        async with loaded(client, seen):
            healed = await _cut_for(host, seen)
            assert await status(client, "/health/live", timeout=3.0) == 200
            await until(client, "/health/ready", 200, RECOVERY_SECONDS)
        answered_and_recovered(seen, healed)
        caught_up = await check_invariants(settings, pg_url, set(seen.sent))
    report("broker-netns", seen, healed, caught_up)
