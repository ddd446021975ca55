"""The read-model schema: numbered SQL migrations, applied once each, and the connection pool over them."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import asyncpg
import msgspec

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class Migration(msgspec.Struct, frozen=True):
    """One SQL file of ``projector/migrations``: ``NNNN_name.sql``."""

    version: int
    name: str
    sql: str


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL identifier, quoted so that any text is safe in SQL."""
    return '"' + name.replace('"', '""') + '"'


def migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("blackboard.projector").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            version = int(match.group(1))
            found.append(Migration(version, entry.name.removesuffix(".sql"), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    return found


async def migrate(pool_or_conn: asyncpg.Pool | asyncpg.Connection, schema: str) -> list[str]:
    """Create ``schema`` if missing and apply the migrations it lacks; return the names applied.

    Each migration runs in its own transaction and is recorded in ``<schema>.schema_migrations``.

    Note: processes starting together serialise on a transaction-scoped advisory lock per
    schema, so each migration is applied exactly once whoever wins the race.
    """
    if isinstance(pool_or_conn, asyncpg.Pool):
        async with pool_or_conn.acquire() as conn:
            return await _migrate(conn, schema)
    return await _migrate(pool_or_conn, schema)


async def _migrate(conn: asyncpg.Connection, schema: str) -> list[str]:
    applied: list[str] = []
    for migration in migrations():
        async with conn.transaction():
            if await _apply_one(conn, schema, migration):
                applied.append(migration.name)
    return applied


async def _apply_one(conn: asyncpg.Connection, schema: str, migration: Migration) -> bool:
    """Apply ``migration`` inside the caller's transaction unless it already was; say whether it ran."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('blackboard.migrate:' || $1))", schema)
    # The files name no schema: search_path points them at ours for this transaction only.
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
    await conn.execute(f"SET LOCAL search_path TO {quote_ident(schema)}")
    await conn.execute(_BOOKKEEPING)
    if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE version = $1", migration.version):
        return False
    await conn.execute(migration.sql)
    await conn.execute(
        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
    )
    return True


async def create_pool(dsn: str, schema: str, **options: Any) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in ``schema`` and read jsonb as dicts.

    ``options`` go to ``asyncpg.create_pool`` (``min_size``, ``max_size``, …).

    Note: jsonb travels in its binary format, whose first byte is a format version (1); the
    codec adds and strips it around msgspec's JSON.
    """
    settings = {"search_path": quote_ident(schema), **options.pop("server_settings", {})}
    pool: asyncpg.Pool = await asyncpg.create_pool(dsn, server_settings=settings, init=_init_connection, **options)
    return pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="binary", encoder=_encode_jsonb, decoder=_decode_jsonb
    )


def _encode_jsonb(value: Any) -> bytes:
    return b"\x01" + msgspec.json.encode(value)


def _decode_jsonb(data: bytes) -> Any:
    return msgspec.json.decode(memoryview(data)[1:])
