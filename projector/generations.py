"""Generations of the read models: which schema is live, and the atomic swap to a rebuilt one.

A rebuild never writes into the schema reads are served from. It builds generation N in a
schema of its own (``<base>_g<N>``; generation 0 is ``<base>`` itself), with a Redis key
namespace of its own (``<prefix>g<N>:``), and then one transaction makes it the live one. Which
generation is live is a row in ``<base>_control.generations``; every process that serves reads
or projects watches it (LISTEN on ``CHANNEL``, and a poll in case a notification is missed) and
moves to the new schema and namespace when it changes, so the cache never mixes two projections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg
import msgspec
import structlog

from blackboard.events.postgres.schema import SchemaFiles, migrate, quote_ident

logger = structlog.get_logger(__name__)

#: Notified (payload: the base schema) when a generation becomes live.
CHANNEL = "blackboard_generation"
POLL_SECONDS = 1.0

#: The control schema: ``projector/migrations/control``, applied by the one schema runner.
CONTROL_SCHEMA = SchemaFiles("blackboard.projector", "migrations/control", "control_migrations")


class Generation(msgspec.Struct, frozen=True):
    """One build of the read models: ``building`` → ``live`` → ``retired``, or ``abandoned`` half-built."""

    number: int
    schema: str
    state: str
    created_at: datetime | None = None
    swapped_at: datetime | None = None


class GenerationError(Exception):
    """A swap or removal that would break the live read models, or a rebuild already running."""


def control_schema(base: str) -> str:
    return f"{base}_control"


def schema_of(base: str, number: int) -> str:
    """The schema of generation ``number``: the base schema itself for the first one."""
    return base if number == 0 else f"{base}_g{number}"


def cache_prefix(prefix: str, number: int) -> str:
    """The Redis key prefix of generation ``number``'s documents."""
    return prefix if number == 0 else f"{prefix}g{number}:"


def _table(base: str) -> str:
    return f"{quote_ident(control_schema(base))}.generations"


async def ensure(conn: asyncpg.Connection, base: str) -> list[str]:
    """Create or upgrade the control schema, with generation 0 live when none is (what a first start serves);
    return the names of the files applied."""
    applied = await migrate(conn, control_schema(base), CONTROL_SCHEMA)
    await conn.execute(f"INSERT INTO {_table(base)} (number, schema, state, swapped_at) "
                       "VALUES (0, $1, 'live', now()) ON CONFLICT DO NOTHING", base)
    return applied


async def live(conn: asyncpg.Connection | asyncpg.Pool, base: str) -> Generation:
    """The live generation (creating the control table on first use)."""
    row = await _live_row(conn, base)
    if row is None:
        if isinstance(conn, asyncpg.Pool):
            async with conn.acquire() as c:
                await ensure(c, base)
        else:
            await ensure(conn, base)
        row = await _live_row(conn, base)
    assert row is not None, "ensure() leaves a live generation"
    return Generation(**dict(row.items()))


async def _live_row(conn: asyncpg.Connection | asyncpg.Pool, base: str) -> asyncpg.Record | None:
    try:
        row: asyncpg.Record | None = await conn.fetchrow(f"SELECT * FROM {_table(base)} WHERE state = 'live'")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return None
    return row


async def listing(conn: asyncpg.Connection | asyncpg.Pool, base: str) -> list[Generation]:
    await live(conn, base)
    rows = await conn.fetch(f"SELECT * FROM {_table(base)} ORDER BY number")
    return [Generation(**dict(r.items())) for r in rows]


async def begin(conn: asyncpg.Connection, base: str) -> Generation:
    """A new generation in state ``building``, numbered after every earlier one."""
    await live(conn, base)
    async with conn.transaction():
        await conn.execute(f"LOCK TABLE {_table(base)} IN EXCLUSIVE MODE")
        number = int(await conn.fetchval(f"SELECT max(number) + 1 FROM {_table(base)}"))
        row = await conn.fetchrow(f"INSERT INTO {_table(base)} (number, schema, state) VALUES ($1, $2, 'building') "
                                  "RETURNING *", number, schema_of(base, number))
    assert row is not None
    return Generation(**dict(row.items()))


async def swap(conn: asyncpg.Connection, base: str, number: int) -> Generation:
    """Make ``number`` live and the live one retired, inside the caller's transaction; notify on commit."""
    row = await conn.fetchrow(f"SELECT state FROM {_table(base)} WHERE number = $1 FOR UPDATE", number)
    if row is None or row["state"] != "building":
        raise GenerationError(f"generation {number} is {row['state'] if row else 'unknown'}, not building")
    await conn.execute(f"UPDATE {_table(base)} SET state = 'retired' WHERE state = 'live'")
    swapped = await conn.fetchrow(f"UPDATE {_table(base)} SET state = 'live', swapped_at = now() WHERE number = $1 "
                                  "RETURNING *", number)
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, base)
    assert swapped is not None
    return Generation(**dict(swapped.items()))


async def abandon(conn: asyncpg.Connection | asyncpg.Pool, base: str, number: int) -> None:
    await conn.execute(f"UPDATE {_table(base)} SET state = 'abandoned' WHERE number = $1 AND state = 'building'",
                       number)


async def drop(conn: asyncpg.Connection, base: str, *, building_too: bool = False) -> list[Generation]:
    """Drop the schemas of the retired and abandoned generations (and of those still ``building``
    when ``building_too``: only safe when no rebuild is running); return them."""
    states = ["retired", "abandoned"] + (["building"] if building_too else [])
    await live(conn, base)
    dropped: list[Generation] = []
    async with conn.transaction():
        rows = await conn.fetch(f"SELECT * FROM {_table(base)} WHERE state = ANY($1::text[]) FOR UPDATE", states)
        for row in rows:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(row['schema'])} CASCADE")
            await conn.execute(f"DELETE FROM {_table(base)} WHERE number = $1", row["number"])
            dropped.append(Generation(**dict(row.items())))
    return dropped


async def drop_one(conn: asyncpg.Connection, base: str, number: int) -> None:
    """Drop generation ``number``'s schema and row; never the live one."""
    async with conn.transaction():
        row = await conn.fetchrow(f"SELECT * FROM {_table(base)} WHERE number = $1 FOR UPDATE", number)
        if row is None:
            return
        if row["state"] == "live":
            raise GenerationError(f"generation {number} is live; it is never dropped")
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(row['schema'])} CASCADE")
        await conn.execute(f"DELETE FROM {_table(base)} WHERE number = $1", number)


class GenerationWatch:
    """Calls ``on_change`` with the new live generation whenever it changes.

    Note: LISTEN wakes it at once; the poll every ``POLL_SECONDS`` covers a notification lost
    while its connection was being re-established.
    """

    def __init__(self, dsn: str, base: str, current: Generation,
                 on_change: Callable[[Generation], Awaitable[None]]) -> None:
        self.dsn, self.base, self.current, self.on_change = dsn, base, current, on_change
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="generation-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                await conn.add_listener(CHANNEL, self._notified)
                while True:
                    newest = await live(conn, self.base)
                    if newest.number != self.current.number:
                        logger.info("generation.changed", previous=self.current.number, live=newest.number,
                                    schema=newest.schema)
                        await self.on_change(newest)
                        self.current = newest
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL away: the live generation cannot change without it either
                logger.warning("generation.watch_failed", error=repr(exc))
                await asyncio.sleep(POLL_SECONDS)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2.0)

    def _notified(self, *_: object) -> None:
        self._wake.set()
