"""A role started before its dependencies waits for them and comes up by itself once they appear.

Each dependency sits behind a forwarder on a port of its own that the test opens only seconds after the
process started, so until then the process finds nobody there, as a container started before its broker
does. The broker is a tansu of the test's own that advertises the forwarder, so no client can reach it
another way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest

from tests.integration.harness import Process
from tests.proxy import Forwarder
from tests.services import Tansu, free_port

pytestmark = pytest.mark.slow


def _port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url
    return port


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{port}" if "@" in parts.netloc else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _postgres_upstream(url: str) -> int | str:
    """The server's TCP port, or its Unix socket (the embedded server listens on one only)."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return f"{parse_qs(parts.query)['host'][0]}/.s.PGSQL.5432"


def _lines(proc: Process) -> list[dict[str, Any]]:
    """Every JSON line the process logged."""
    proc.log.seek(0)
    found = []
    for line in proc.log.read().decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            found.append(json.loads(line))
    return [line for line in found if isinstance(line, dict)]


async def _get(url: str) -> httpx.Response | None:
    async with httpx.AsyncClient(timeout=3) as client:
        try:
            return await client.get(url)
        except httpx.TransportError:
            return None


async def _until_answering(proc: Process, timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        assert proc.proc.poll() is None, proc.output()
        live = await _get(f"{proc.url}/health/live")
        if live is not None and live.status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no /health/live while waiting: {proc.output()}")


@pytest.fixture
def broker() -> Iterator[tuple[Tansu, int]]:
    port = free_port()
    tansu = Tansu(advertised_port=port)
    yield tansu, port
    tansu.stop()


@contextlib.asynccontextmanager
async def later(forwarders: list[Forwarder]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for forwarder in forwarders:
            await forwarder.stop()


async def test_a_role_started_before_its_broker_postgres_and_redis_comes_up_by_itself(
        broker: tuple[Tansu, int], pg_url: str, redis_url: str, topic_prefix: str, redis_prefix: str) -> None:
    tansu, kafka_port = broker
    postgres = Forwarder(free_port(), _postgres_upstream(pg_url))
    redis = Forwarder(free_port(), _port_of(redis_url))
    kafka = Forwarder(kafka_port, tansu.port)
    env = {"BLACKBOARD_POSTGRES_URL": _with_port(pg_url, postgres.port),
           "BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.port}",
           "BLACKBOARD_REDIS_URL": _with_port(redis_url, redis.port),
           "BLACKBOARD_TOPIC_PREFIX": topic_prefix, "BLACKBOARD_REDIS_PREFIX": redis_prefix,
           "BLACKBOARD_PARTITIONS": "4", "BLACKBOARD_STARTUP_TIMEOUT_SECONDS": "90"}
    proc = Process(env, free_port(), "command", "projector", "query")
    async with later([postgres, redis, kafka]):
        try:
            await _until_answering(proc)
            ready = await _get(f"{proc.url}/health/ready")
            assert ready is not None and ready.status_code == 503
            assert ready.json() == {"status": "starting", "waiting_for": ["kafka", "postgres", "redis"]}
            for forwarder in (redis, postgres, kafka):  # one after the other, seconds apart
                await asyncio.sleep(2.5)
                assert proc.proc.poll() is None, proc.output()
                await forwarder.start()
            await proc.ready(90)
            async with httpx.AsyncClient(timeout=30) as client:
                created = await client.post(f"{proc.url}/v1/commands", json={
                    "type": "project.create", "stream": "project:p-1",
                    "payload": {"title": "t", "currency": "EUR", "budget_total": "1.00"}})
            assert created.status_code == 200, created.text
            waited = {line["dependency"] for line in _lines(proc) if line.get("event") == "startup.waiting"}
            assert waited == {"postgres", "kafka", "redis"}, proc.output()
            reached = {line["dependency"] for line in _lines(proc) if line.get("event") == "startup.reached"}
            # Redis may not have been tried again before the others answered: it is not waited for alone.
            assert reached >= {"postgres", "kafka"}, proc.output()
            ready = await _get(f"{proc.url}/health/ready")
            assert ready is not None and ready.json()["status"] == "ready", ready
        finally:
            proc.stop()


async def test_a_missing_postgres_ends_the_start_naming_it_and_the_setting() -> None:
    missing = free_port()
    env = {"BLACKBOARD_POSTGRES_URL": f"postgresql://bb:s3cret-pw@127.0.0.1:{missing}/bb",
           "BLACKBOARD_STARTUP_TIMEOUT_SECONDS": "3"}
    proc = Process(env, free_port(), "query")
    try:
        code = await asyncio.to_thread(proc.proc.wait, 60)
        assert code != 0
        gave_up = [line for line in _lines(proc) if line.get("event") == "startup.gave_up"]
        assert len(gave_up) == 1, proc.output()
        assert gave_up[0]["dependency"] == "postgres" and gave_up[0]["address"] == f"127.0.0.1:{missing}"
        assert gave_up[0]["setting"] == "BLACKBOARD_STARTUP_TIMEOUT_SECONDS"
        assert "s3cret-pw" not in proc.output(), "no password in the logs"
        attempts = [line for line in _lines(proc) if line.get("event") == "startup.waiting"]
        assert len(attempts) >= 3 and [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    finally:
        proc.stop()


async def test_a_redis_that_stays_away_only_degrades_the_start(pg_url: str, redis_prefix: str) -> None:
    """Redis is a cache: once PostgreSQL answers the role starts without it, well before the deadline."""
    env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
           "BLACKBOARD_REDIS_PREFIX": redis_prefix, "BLACKBOARD_STARTUP_TIMEOUT_SECONDS": "600"}
    proc = Process(env, free_port(), "query")
    try:
        await proc.ready(60)
        ready = await _get(f"{proc.url}/health/ready")
        assert ready is not None and ready.json()["status"] == "degraded"
        assert [line["dependency"] for line in _lines(proc) if line.get("event") == "startup.starting_without"] \
            == ["redis"]
    finally:
        proc.stop()
