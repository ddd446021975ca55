"""Start-up that waits instead of dying: a role started before its broker, PostgreSQL or Redis retries them.

Each dependency is tried with exponential backoff and jitter (``stamina``) until it answers or
``BLACKBOARD_STARTUP_TIMEOUT_SECONDS`` have passed; every failed attempt is one JSON log line. Meanwhile
the role's port answers ``/health/live`` (200) and ``/health/ready`` (503, naming what it waits for), so
an orchestrator neither restarts it nor sends it traffic. PostgreSQL and the log are required: without
them the role gives up with an error naming the dependency and the setting. Redis is a cache the role
serves without: it is retried while the others are, and when it is still away once they answer, the role
starts degraded, as it would when Redis fails later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import msgspec
import redis.asyncio as aioredis
import stamina
import structlog

from blackboard.config import Settings
from blackboard.events.log import LogUnavailable

log = structlog.get_logger(__name__)

SETTING = "BLACKBOARD_STARTUP_TIMEOUT_SECONDS"
#: The longest a single attempt may take: a dependency that hangs is retried like one that refuses.
ATTEMPT_SECONDS = 5.0
#: What a failed attempt raises; anything else is a bug or a misconfiguration and ends the wait at once.
UNAVAILABLE = (OSError, TimeoutError, LogUnavailable, asyncpg.PostgresError, aioredis.RedisError)


class DependencyUnavailable(RuntimeError):
    """A required dependency did not answer within the start-up deadline."""


@dataclass
class Waiting:
    """The dependencies not yet reached, by name (what ``/health/ready`` reports meanwhile)."""

    pending: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Dependency:
    name: str
    #: Where it is, without credentials: for the logs and the error.
    address: str
    probe: Callable[[], Awaitable[None]]
    required: bool = True


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def dependencies(settings: Settings, postgres_url: str) -> list[Dependency]:
    """What a role needs before it starts: PostgreSQL, the broker (the Kafka log), Redis when configured."""
    deps = [Dependency("postgres", _address(postgres_url), lambda: _postgres(postgres_url))]
    if settings.kafka_bootstrap_servers:
        deps.append(Dependency("kafka", settings.kafka_bootstrap_servers, lambda: _kafka(settings, postgres_url)))
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        deps.append(Dependency("redis", _address(url), lambda: _redis(url), required=False))
    return deps


async def _postgres(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=ATTEMPT_SECONDS)
    await conn.close()


async def _kafka(settings: Settings, postgres_url: str) -> None:
    from blackboard.app import open_log  # the same clients, with the same security, as the role opens

    log_ = open_log(settings, postgres_url)
    try:
        await log_.start()
    finally:
        await log_.close()


async def _redis(url: str) -> None:
    client = aioredis.from_url(url, socket_timeout=ATTEMPT_SECONDS, socket_connect_timeout=ATTEMPT_SECONDS)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def wait_for(dependency: Dependency, timeout: float, waiting: Waiting) -> None:
    """Try ``dependency`` until it answers; ``DependencyUnavailable`` (required) or a warning after ``timeout``."""
    waiting.pending.add(dependency.name)
    number = 0
    try:
        async for attempt in stamina.retry_context(on=UNAVAILABLE, attempts=None, timeout=timeout,
                                                   wait_initial=0.2, wait_max=5.0, wait_jitter=1.0):
            with attempt:
                number = attempt.num
                await _attempt(dependency, number, timeout)
    except UNAVAILABLE as exc:
        message = (f"{dependency.name} at {dependency.address} did not answer within {timeout:g} s "
                   f"({number} attempts; raise {SETTING} to wait longer): {exc!r}")
        if dependency.required:
            log.error("startup.gave_up", dependency=dependency.name, address=dependency.address,
                      attempts=number, setting=SETTING, error=repr(exc))
            raise DependencyUnavailable(message) from exc
        log.warning("startup.starting_without", dependency=dependency.name, address=dependency.address,
                    attempts=number, setting=SETTING, error=repr(exc))
        return
    finally:
        waiting.pending.discard(dependency.name)
    if number > 1:
        log.info("startup.reached", dependency=dependency.name, address=dependency.address, attempts=number)


async def _attempt(dependency: Dependency, number: int, timeout: float) -> None:
    try:
        await asyncio.wait_for(dependency.probe(), ATTEMPT_SECONDS * 2)
    except UNAVAILABLE as exc:
        log.warning("startup.waiting", dependency=dependency.name, address=dependency.address, attempt=number,
                    deadline_seconds=timeout, error=repr(exc))
        raise


async def wait_for_dependencies(settings: Settings, postgres_url: str, waiting: Waiting | None = None, *,
                                only: frozenset[str] | None = None) -> None:
    """Wait for every dependency (or those named in ``only``) at once, within one deadline.

    The first required one missing raises. Redis is waited for only as long as a required one is: once
    PostgreSQL and the broker answer, the role starts, degraded when Redis is still away.
    """
    waiting = waiting if waiting is not None else Waiting()
    timeout = settings.startup_timeout_seconds
    # One line of our own per attempt (above) instead of stamina's, which would also add a Prometheus series
    # per retry number; nothing else in a server process retries through stamina.
    stamina.instrumentation.set_on_retry_hooks([])
    deps = [d for d in dependencies(settings, postgres_url) if only is None or d.name in only]
    optional = {asyncio.create_task(wait_for(d, timeout, waiting)): d for d in deps if not d.required}
    try:
        async with asyncio.TaskGroup() as group:
            for dependency in deps:
                if dependency.required:
                    group.create_task(wait_for(dependency, timeout, waiting))
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    finally:
        for task in optional:
            task.cancel()
        await asyncio.gather(*optional, return_exceptions=True)
    for task, dependency in optional.items():
        if task.cancelled():
            log.warning("startup.starting_without", dependency=dependency.name, address=dependency.address)


@contextlib.asynccontextmanager
async def answering_health(host: str, port: int, waiting: Waiting) -> AsyncIterator[None]:
    """Until the block ends, answer on ``port``: live, and not ready with what is awaited (before the app binds)."""
    if port == 0:  # any port: nobody could know where to ask
        yield
        return
    server = await asyncio.start_server(lambda r, w: _answer(r, w, waiting), host, port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, waiting: Waiting) -> None:
    try:
        request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ATTEMPT_SECONDS)
        path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
        status, body = b"503 Service Unavailable", {"status": "starting", "waiting_for": sorted(waiting.pending)}
        if path == b"/health/live":
            status, body = b"200 OK", {"status": "live"}
        payload = msgspec.json.encode(body)
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def started(settings: Settings, postgres_url: str) -> AsyncIterator[None]:
    """Answer health on the role's port while waiting for its dependencies, then for the block (its own start)."""
    waiting = Waiting()
    async with answering_health(settings.host, settings.port, waiting):
        await wait_for_dependencies(settings, postgres_url, waiting)
        yield
