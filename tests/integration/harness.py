"""Running Blackboard in the test process over real services, and reading the log back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import uvicorn
from pydantic import SecretStr

from benchmarks.server import Server
from blackboard.app import ROLES, Runtime
from blackboard.config import Settings
from blackboard.events.codec import from_record, passed_over
from blackboard.events.log import PartitionedLog
from blackboard.http_app import build_app
from blackboard.http_server import GatheringHttpToolsProtocol
from blackboard.ops.checksums import checksums
from blackboard.schemas.envelope import RecordedEvent


def settings_for(engine: str, *, pg_url: str, topic_prefix: str, kafka: str | None = None,
                 redis_url: str | None = None, redis_prefix: str = "bb:", **extra: Any) -> Settings:
    """Settings for one test: its own database, topics and Redis keys."""
    return Settings(
        postgres_url=SecretStr(pg_url),
        kafka_bootstrap_servers=kafka if engine == "kafka" else None,
        redis_url=SecretStr(redis_url) if redis_url else None,
        topic_prefix=topic_prefix,
        redis_prefix=redis_prefix,
        partitions=4,
        **extra,
    )


@contextlib.asynccontextmanager
async def running(settings: Settings, *, roles: frozenset[str] | None = None
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A started runtime behind an in-process HTTP client: the whole ASGI app, on the test's event loop."""
    assert settings.postgres_url is not None
    runtime = Runtime(settings, settings.postgres_url.get_secret_value(), roles=roles or ROLES)
    await runtime.start()
    try:
        app = build_app(runtime, manage_lifecycle=False)
        # Litestar types the ASGI scope and events as TypedDicts, httpx as plain mappings: the same protocol,
        # which neither library's annotations let the other accept.
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://blackboard.test", timeout=30) as client:
            yield client, runtime
    finally:
        await runtime.stop()


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, str]]:
    """A started runtime behind uvicorn on a free loopback port, for a client in another process (a worker,
    a faust app), and a client of it with the URL."""
    assert settings.postgres_url is not None
    runtime = Runtime(settings, settings.postgres_url.get_secret_value())
    await runtime.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(runtime, manage_lifecycle=False), lifespan="off",
                                           http=GatheringHttpToolsProtocol, log_level="warning",
                                           timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client, runtime, url
    finally:
        server.should_exit = True
        await task
        sock.close()
        await runtime.stop()


async def command(client: httpx.AsyncClient, type_: str, stream: str,
                  payload: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {"type": type_, "stream": stream, "payload": payload, **extra}
    response: httpx.Response = await client.post("/v1/commands", json=body)
    return response


async def read_events(log: PartitionedLog, topic: str) -> list[RecordedEvent]:
    """Every event of ``topic``, partition by partition, read to the exact end."""
    events: list[RecordedEvent] = []
    partitions = await log.partition_count(topic)
    for p in range(partitions):
        end = await log.end_offset(topic, p)
        if end == 0:
            continue
        reader = log.reader(topic)
        try:
            await reader.seek(p, 0)
            got = 0
            while got < end:
                for rec in await reader.read(max_records=5000, timeout=2.0):
                    got = rec.offset + 1
                    if passed_over(rec) is None:  # ownership markers and fenced writes are not events
                        events.append(from_record(rec))
        finally:
            await reader.close()
    return events


class Process(Server):
    """``blackboard up`` in a process of its own on ``port``, which a test can also kill, pause and resume."""

    def __init__(self, env: dict[str, str], port: int, *roles: str) -> None:
        super().__init__(env, list(roles), port=port)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


async def wait_rebuilt(log: PartitionedLog, settings: Settings, pg_url: str, schema: str,
                       timeout: float = 60.0) -> None:
    """Wait until the projection in ``schema`` has read the events topic to its end."""
    partitions = await log.partition_count(settings.events_topic)
    total = sum([await log.end_offset(settings.events_topic, p) for p in range(partitions)])
    conn = await asyncpg.connect(pg_url)
    try:
        deadline = time.monotonic() + timeout
        query = f"SELECT coalesce(sum(next_offset), 0) FROM {schema}.projection_offsets"
        while await conn.fetchval(query) < total:
            assert time.monotonic() < deadline, f"{schema} did not catch up with {total} records"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def rebuilding(engine: str, pg_url: str, topic_prefix: str,
                     kafka: str | None) -> AsyncIterator[tuple[Settings, Runtime]]:
    """The test's settings, and a projector-only runtime folding its log from offset 0 into schema ``rebuild``."""
    settings = settings_for(engine, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka)
    rebuild = settings_for(engine, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka, read_schema="rebuild")
    runtime = Runtime(rebuild, pg_url, roles=frozenset({"projector"}))
    await runtime.start()
    try:
        assert runtime.log is not None
        yield settings, runtime
    finally:
        await runtime.stop()


def assert_dense_versions(events: list[RecordedEvent]) -> None:
    """Every stream's versions run 1, 2, 3… in log order, with no gap and no repeat."""
    for stream in {e.envelope.stream for e in events}:
        versions = [e.envelope.stream_version for e in events if e.envelope.stream == stream]
        assert versions == list(range(1, len(versions) + 1)), stream


async def read_checksums(pg_url: str, schema: str) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(pg_url)
    try:
        return await checksums(conn, schema)
    finally:
        await conn.close()
