"""A bulk load's settings: the secondary indexes dropped before it and built once after it (the collector,
run rarely meanwhile, is ``events.collector.bulk_gc``)."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec

from blackboard.projector.migrate import quote_ident
from blackboard.projector.statements import statement

#: ``maintenance_work_mem`` of each index build after a bulk load: the change log's indexes of 1M
#: events sort in memory, instead of in temporary files.
BUILD_MEMORY = "256MB"


#: Unique constraints that only refuse a repeat record by record (no upsert relies on them), so a bulk
#: load may check them once at its end: (table, constraint).
DEFERRABLE_CHECKS = (("change_log", "change_log_event_id_key"),)


class RepeatedInLog(Exception):
    """A check made at the end of a bulk load failed: the log repeats what must be unique (an ``event_id``)."""


class Deferred(msgspec.Struct, frozen=True):
    """What ``defer_indexes`` set aside for a bulk load: ``statements`` to run after it, each with the
    table it builds on, and the ``tables`` whose autovacuum waits until then."""

    statements: list[tuple[str, str]]
    tables: list[str]


async def defer_indexes(pool: asyncpg.Pool, schema: str, *, checks: bool = True) -> Deferred:
    """Drop ``schema``'s plain secondary indexes (and, with ``checks``, the ``DEFERRABLE_CHECKS``) and hold
    autovacuum off its tables for a bulk load; ``restore_indexes`` undoes it all.

    Note: a rebuild writes every row once, so building each index in one sorted pass after the
    load costs less than keeping it up to date row by row (the random ``event_id`` and
    ``command_id`` keys cost the change log's COPY more than half its time). The upserts' keys
    stay, and so does every other unique constraint. Autovacuum would otherwise vacuum the
    freshly inserted change log in the middle of the load, for nothing.
    """
    statements: list[tuple[str, str]] = []
    tables: list[str] = []
    async with pool.acquire() as conn:
        for row in await conn.fetch(statement("plain_indexes"), schema):
            await conn.execute(f"DROP INDEX {quote_ident(schema)}.{quote_ident(row['indexname'])}")
            statements.append((f"{quote_ident(schema)}.{quote_ident(row['tablename'])}", row["indexdef"]))
        for table, name in DEFERRABLE_CHECKS if checks else ():
            qualified = f"{quote_ident(schema)}.{quote_ident(table)}"
            definition = await conn.fetchval(statement("constraint_definition"), schema, qualified, name)
            if definition is None:
                continue
            await conn.execute(f"ALTER TABLE {qualified} DROP CONSTRAINT {quote_ident(name)}")
            statements.append((qualified, f"ALTER TABLE {qualified} ADD CONSTRAINT {quote_ident(name)} {definition}"))
        for table in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema):
            tables.append(f"{quote_ident(schema)}.{quote_ident(table['tablename'])}")
            await conn.execute(f"ALTER TABLE {tables[-1]} SET (autovacuum_enabled = false)")
    return Deferred(statements, tables)


async def restore_indexes(pool: asyncpg.Pool, deferred: Deferred) -> None:
    """Build what ``defer_indexes`` dropped, the largest tables' first, as many at once as ``pool`` has
    connections; ``RepeatedInLog`` when a check fails. Then let autovacuum back in."""
    async with pool.acquire() as conn:
        sizes = {t: await conn.fetchval("SELECT pg_total_relation_size(to_regclass($1))", t)
                 for t in {table for table, _ in deferred.statements}}

    async def build(statement: str) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL maintenance_work_mem = '{BUILD_MEMORY}'")
            try:
                await conn.execute(statement)
            except asyncpg.UniqueViolationError as exc:
                raise RepeatedInLog(f"{exc} ({exc.detail})") from exc

    try:
        async with asyncio.TaskGroup() as group:
            for _, statement in sorted(deferred.statements, key=lambda item: -sizes[item[0]]):
                group.create_task(build(statement))
    except* RepeatedInLog as failed:
        raise failed.exceptions[0] from None
    async with pool.acquire() as conn:
        for table in deferred.tables:
            await conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
