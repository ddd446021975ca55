"""The read-model schema: its numbered SQL migrations (``projector/migrations``), and the connection pool over them."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from blackboard.events.postgres.schema import Migration, SchemaFiles, quote_ident
from blackboard.events.postgres.schema import migrate as migrate_schema

__all__ = ["READ_MODELS", "Migration", "create_pool", "migrate", "migrations", "quote_ident"]

#: The read models' schema: ``projector/migrations``, applied by the one schema runner into each
#: generation's schema. The bookkeeping table keeps the name it always had.
READ_MODELS = SchemaFiles("blackboard.projector", "migrations", "schema_migrations")


def migrations() -> list[Migration]:
    """Every read-model migration shipped with the package, in version order."""
    return READ_MODELS.migrations()


async def migrate(pool_or_conn: asyncpg.Pool | asyncpg.Connection, schema: str) -> list[str]:
    """Create ``schema`` if missing and apply the read-model migrations it lacks; return the names applied.

    Each migration runs in its own transaction and is recorded in ``<schema>.schema_migrations``.

    Note: processes starting together serialise on a transaction-scoped advisory lock per
    schema, so each migration is applied exactly once whoever wins the race.
    """
    return await migrate_schema(pool_or_conn, schema, READ_MODELS)


async def create_pool(dsn: str, schema: str, **options: Any) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in ``schema`` and read jsonb as dicts.

    ``options`` go to ``asyncpg.create_pool`` (``min_size``, ``max_size``, …); ``pool_class``: a subclass of
    ``asyncpg.Pool`` to make instead.

    Note: jsonb travels in its binary format, whose first byte is a format version (1); the
    codec adds and strips it around msgspec's JSON.
    """
    settings = {"search_path": quote_ident(schema), **options.pop("server_settings", {})}
    pool_class: type[asyncpg.Pool] | None = options.pop("pool_class", None)
    if pool_class is not None:  # a subclass (a bounded read pool): asyncpg.create_pool makes only its own class
        defaults = {"min_size": 10, "max_size": 10, "max_queries": 50_000, "max_inactive_connection_lifetime": 300.0,
                    "loop": None, "connection_class": asyncpg.Connection, "record_class": asyncpg.Record}
        made: asyncpg.Pool = await pool_class(dsn, server_settings=settings, init=_init_connection,
                                              **{**defaults, **options})
        return made
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
