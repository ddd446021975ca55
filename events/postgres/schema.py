"""The one schema runner: every PostgreSQL schema the project owns is made and changed by numbered SQL files.

A kind of schema (the log, the blob store, the read models, their generations' control table) has
its files, ``NNNN_name.sql`` in one folder of a package. ``migrate`` applies those a schema lacks,
in order, each in a transaction of its own, under an advisory lock on the schema held meanwhile,
and records each in a bookkeeping table of the schema: a file is applied once, however many
processes run the runner together, and a second run changes nothing. The files name no schema: the
runner points ``search_path`` at the one being migrated.

A schema made before its files were recorded (by an earlier way of making it) is adopted: its
``adopt`` says, from the catalog, how many of the files it already has, and those are recorded
without being run.

Note: the runner knows nothing of what the files hold, so every room may use it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import asyncpg
import msgspec

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

#: Adopts a schema made before its files were recorded: how many of them it already has.
Adopt = Callable[[asyncpg.Connection], Awaitable[int]]


class Migration(msgspec.Struct, frozen=True):
    """One SQL file: ``NNNN_name.sql``, named ``NNNN_name``."""

    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class SchemaFiles:
    """The numbered SQL files of one kind of schema: folder ``folder`` of package ``package``.

    ``table`` is the bookkeeping table inside the schema: a name of its own per kind, so that two
    kinds configured into one schema never take each other's files as applied.
    """

    package: str
    folder: str
    table: str
    adopt: Adopt | None = None

    def migrations(self) -> list[Migration]:
        """Every file shipped, in version order."""
        found: list[Migration] = []
        for entry in resources.files(self.package).joinpath(self.folder).iterdir():
            match = _FILE_NAME.match(entry.name)
            if match:
                found.append(Migration(int(match.group(1)), entry.name.removesuffix(".sql"), entry.read_text("utf-8")))
        found.sort(key=lambda m: m.version)
        return found


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL identifier, quoted so that any text is safe in SQL."""
    return '"' + name.replace('"', '""') + '"'


async def migrate(target: asyncpg.Pool | asyncpg.Connection, schema: str, files: SchemaFiles) -> list[str]:
    """Create ``schema`` if missing and apply the files of ``files`` it lacks; return the names applied.

    Call it outside a transaction: each file gets one of its own.
    """
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn:
            return await _migrate(conn, schema, files)
    return await _migrate(target, schema, files)


async def applied_versions(conn: asyncpg.Connection, schema: str, files: SchemaFiles) -> set[int] | None:
    """The versions recorded as applied in ``schema``; ``None`` when it has no bookkeeping table."""
    if await conn.fetchval("SELECT to_regclass($1)", f"{quote_ident(schema)}.{quote_ident(files.table)}") is None:
        return None
    rows = await conn.fetch(f"SELECT version FROM {quote_ident(schema)}.{quote_ident(files.table)}")
    return {int(r["version"]) for r in rows}


async def _migrate(conn: asyncpg.Connection, schema: str, files: SchemaFiles) -> list[str]:
    shipped = files.migrations()
    done = await applied_versions(conn, schema, files)
    if done is not None and done >= {m.version for m in shipped}:
        return []  # the common case, at every start: no lock taken
    # A session lock, taken before the transactions: a transaction begun after it sees the catalog as
    # the previous holder left it. Under a lock taken inside the transaction, the session's cached
    # "no such schema" from the look above could survive the other's commit, and CREATE SCHEMA IF NOT
    # EXISTS would then collide with it. The key is the one the read models' migrations always used.
    await conn.execute("SELECT pg_advisory_lock(hashtext('blackboard.migrate:' || $1))", schema)
    try:
        applied: list[str] = []
        for migration in shipped:
            async with conn.transaction():
                if await _apply_one(conn, schema, files, shipped, migration):
                    applied.append(migration.name)
        return applied
    finally:
        # A connection cut meanwhile has lost the lock with its session (and a pool unlocks on release).
        with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError):
            await conn.execute("SELECT pg_advisory_unlock(hashtext('blackboard.migrate:' || $1))", schema)


async def _apply_one(conn: asyncpg.Connection, schema: str, files: SchemaFiles, shipped: list[Migration],
                     migration: Migration) -> bool:
    """Apply ``migration`` inside the caller's transaction unless it already was; say whether it ran."""
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
    table = quote_ident(files.table)
    if await conn.fetchval("SELECT to_regclass($1)", files.table) is None:
        await conn.execute(f"CREATE TABLE {table} (version integer PRIMARY KEY, name text NOT NULL, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")
        adopted = await files.adopt(conn) if files.adopt is not None else 0
        await conn.executemany(f"INSERT INTO {table} (version, name) VALUES ($1, $2)",
                               [(m.version, m.name) for m in shipped[:adopted]])
    if await conn.fetchval(f"SELECT 1 FROM {table} WHERE version = $1", migration.version):
        return False
    await conn.execute(migration.sql)
    await conn.execute(f"INSERT INTO {table} (version, name) VALUES ($1, $2)", migration.version, migration.name)
    return True
