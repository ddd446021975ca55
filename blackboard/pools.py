"""The read pool of the query role: bounded in size, in its wait for a connection and in each statement.

A slow or unreachable PostgreSQL makes a read answer ``503`` with ``Retry-After`` within those bounds
(``read_pool_exhausted``, ``statement_timeout``, ``postgres_unavailable``) instead of hanging; the
pool's size, use and timeouts are metrics.

With ``BLACKBOARD_READ_ROW_SECURITY`` every read made for a caller (while a request is served, or a gRPC call)
runs as the role ``blackboard_tenant_reader`` with ``blackboard.tenant`` set to the caller's tenant, so that
PostgreSQL's row-level security (``projector/migrations/0010_tenant_rows.sql``) shows it that tenant's rows
only, whatever its statement asks: a second line of defence behind the ids scoped to the caller's tenant
(``query_api/tenant_reads.py``).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

import asyncpg
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import Counter, Gauge, Histogram

from blackboard.config import Settings
from blackboard.projector.migrate import create_pool
from blackboard.query_api.tenant_reads import confine, reading_for
from blackboard.schemas.errors import ServiceUnavailable
from blackboard.tenant_answers import TENANT_KEY

#: Seconds a client is told to wait before it tries a read that tripped a bound again.
RETRY_AFTER_SECONDS = 1

SIZE = Gauge("blackboard_read_pool_connections", "Connections of the read pool, by state", ["state"])
WAIT = Histogram("blackboard_read_pool_acquire_seconds", "Wait of a read for a connection of the read pool",
                 buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 1, 2, 5, 10))
TRIPPED = Counter("blackboard_read_pool_timeouts_total", "Reads answered 503 by a bound of the read pool",
                  ["reason"])
#: Errors of a connection that went away: PostgreSQL restarting or unreachable. InternalClientError: a
#: connection the server dropped in the middle of an error, reset on release ("cannot switch to state 15").
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.CannotConnectNowError, asyncpg.InternalClientError)


def request_reads(app: ASGIApp) -> ASGIApp:
    """An ASGI middleware that makes the reads of each request (HTTP, websocket) its caller's: of the tenant the
    gate leaves in the request's scope once it has admitted the principal (``tenant_answers.remember_tenant``)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        with reading_for(lambda: _tenant_in(scope)):
            await app(scope, receive, send)

    return middleware


def _tenant_in(scope: Scope) -> str | None:
    tenant = scope.get(TENANT_KEY)  # a key of ours, beside the ASGI ones
    return tenant if isinstance(tenant, str) else None


class ReadConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no type hints
    """A read pool's connection: its reset on release (run before anyone else gets it, and on failure the
    connection is closed instead) also ends a request's role, so no read ever inherits another's."""

    def get_reset_query(self) -> str:
        return f"{super().get_reset_query()}\nRESET ROLE;"


class ReadPoolTimeout(ServiceUnavailable):
    """A read tripped a bound of the read pool, or PostgreSQL is unreachable; retrying later can help."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


class ReadPool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg has no type hints
    """An ``asyncpg.Pool`` whose acquisitions wait at most ``acquire_timeout`` seconds, and which answers
    a tripped bound or a lost connection with ``ReadPoolTimeout`` (every ``fetch``-like call acquires)."""

    acquire_timeout = 2.0
    #: Whether a request's reads run as ``READER_ROLE`` confined to its tenant (``BLACKBOARD_READ_ROW_SECURITY``).
    row_security = False

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        return _Acquire(self, super().acquire(timeout=self.acquire_timeout if timeout is None else timeout))


class _Acquire:
    """``Pool.acquire``'s context (and awaitable), with the pool's bounds turned into ``ReadPoolTimeout``, and
    the connection confined to the request's tenant under row security."""

    def __init__(self, pool: ReadPool, inner: Any) -> None:
        self._pool, self._inner = pool, inner

    async def __aenter__(self) -> asyncpg.Connection:
        conn = await _acquired(self._inner.__aenter__())
        if self._pool.row_security:
            try:
                await confine(conn)
            except BaseException as exc:
                await self._inner.__aexit__(type(exc), exc, exc.__traceback__)
                translated = _translated(exc)
                if translated is not None:
                    raise translated from exc
                raise
        return conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._inner.__aexit__(kind, exc, tb)
        translated = _translated(exc)
        if translated is not None:
            raise translated from exc

    def __await__(self) -> Any:
        return self._confined(_acquired(self._inner.__aenter__())).__await__()

    async def _confined(self, acquiring: Any) -> asyncpg.Connection:
        conn: asyncpg.Connection = await acquiring
        if self._pool.row_security:
            try:
                await confine(conn)
            except BaseException:
                await self._pool.release(conn)
                raise
        return conn


async def _acquired(acquiring: Any) -> asyncpg.Connection:
    started = time.monotonic()
    try:
        conn: asyncpg.Connection = await acquiring
    except TimeoutError as exc:
        TRIPPED.labels("acquire_timeout").inc()
        raise ReadPoolTimeout("every connection of the read pool is busy; try again shortly",
                              "read_pool_exhausted") from exc
    except _CONNECTION_ERRORS as exc:
        TRIPPED.labels("postgres_unavailable").inc()
        raise ReadPoolTimeout("PostgreSQL is unreachable; try again shortly", "postgres_unavailable") from exc
    finally:
        WAIT.observe(time.monotonic() - started)
    return conn


def _translated(exc: BaseException | None) -> ReadPoolTimeout | None:
    """The 503 a failed read inside an acquired connection stands for, if it is one of the pool's."""
    if isinstance(exc, asyncpg.QueryCanceledError):  # statement_timeout (57014)
        TRIPPED.labels("statement_timeout").inc()
        return ReadPoolTimeout("the read took longer than its statement timeout; try again shortly",
                               "statement_timeout")
    if isinstance(exc, _CONNECTION_ERRORS):
        TRIPPED.labels("postgres_unavailable").inc()
        return ReadPoolTimeout("PostgreSQL is unreachable; try again shortly", "postgres_unavailable")
    return None


async def open_read_pool(settings: Settings, dsn: str, schema: str) -> ReadPool:
    """The read pool of ``schema``, sized and bounded by ``settings``; its size is exported as gauges."""
    statement_ms = int(settings.read_statement_timeout_seconds * 1000)
    pool = await create_pool(dsn, schema, min_size=min(settings.read_pool_min_size, settings.read_pool_max_size),
                             max_size=settings.read_pool_max_size, pool_class=ReadPool,
                             connection_class=ReadConnection,
                             server_settings={"statement_timeout": str(statement_ms)})
    assert isinstance(pool, ReadPool)
    pool.acquire_timeout = settings.read_pool_acquire_timeout_seconds
    pool.row_security = settings.read_row_security
    SIZE.labels("max").set(settings.read_pool_max_size)
    SIZE.labels("open").set_function(pool.get_size)
    SIZE.labels("idle").set_function(pool.get_idle_size)
    return pool
