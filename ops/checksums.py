"""Checksums of the read models: which rows of two schemas differ, without moving the rows out of PostgreSQL."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from blackboard.projector.migrate import quote_ident
from blackboard.projector.tables import COMMON, STATE_TABLES


class Table(msgspec.Struct, frozen=True):
    """A read-model table: its primary key and the columns that are a pure function of the log."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]


# Every column but change_log.recorded_at (the clock at insert): created_at/updated_at come
# from the events' occurred_at, partition/last_offset from their positions.
READ_MODELS = (
    Table("projects", ("id",), ("title", "currency", "budget_total", "spent", "global_spec", "version",
                                "partition", "last_offset", "created_at", "updated_at", "state", "status",
                                "reserved", "spec_version", "dna", "reservations")),
    Table("shots", ("project_id", "shot_id"), ("fields", "version", "created_at", "updated_at")),
    Table("artifacts", ("project_id", "artifact_id"), ("kind", "uri", "params", "cost", "shot_id", "task_id",
                                                       "reservation_id", "created_by", "created_at", "version")),
    # The state tables: every derived column is a function of ``state``, which is compared.
    *(Table(t.table, (t.key,), COMMON) for t in STATE_TABLES.values()),
    Table("checkpoint_entries", ("thread_id", "seq"), ("sha256", "size", "stored_size", "encoding", "inline",
                                                      "inline_from", "blob", "label", "metadata", "parent_seq")),
    Table("change_log", ("stream", "stream_version"),
          ("partition", "offset", "event_id", "type", "schema_version", "actor", "command_id", "correlation_id",
           "causation_id", "occurred_at", "payload", "trace_id", "agent_run_id", "agent_model", "prompt_hash")),
)


class TableCheck(msgspec.Struct, frozen=True):
    """One table compared: ``differing_keys`` holds up to 10 primary keys of rows that differ."""

    table: str
    live_rows: int
    rebuilt_rows: int
    equal: bool
    differing_keys: list[list[Any]]


def _rows_sql(table: Table, schema: str) -> str:
    """``key`` (the primary key as a jsonb array) and ``digest`` (md5 of the row's text) of every row.

    Note: a row's text form tells NULL from '' and keeps numeric scale; timestamps print in the
    session's time zone, the same for both schemas compared on one connection.
    """
    key = ", ".join(quote_ident(c) for c in table.key)
    cols = ", ".join(quote_ident(c) for c in table.key + table.columns)
    return (f"SELECT jsonb_build_array({key}) AS key, md5(ROW({cols})::text) AS digest "
            f"FROM {quote_ident(schema)}.{quote_ident(table.name)}")


async def table_checksum(conn: asyncpg.Connection | asyncpg.Pool, schema: str, table: Table) -> tuple[int, str]:
    """Row count and an order-independent checksum of ``schema.table`` (rows sorted by primary key)."""
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, coalesce(md5(string_agg(digest, ',' ORDER BY key)), '') AS sum "
        f"FROM ({_rows_sql(table, schema)}) AS r")
    assert row is not None
    return int(row["n"]), str(row["sum"])


async def checksums(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> dict[str, tuple[int, str]]:
    """``table_checksum`` of every read model of ``schema``."""
    return {t.name: await table_checksum(conn, schema, t) for t in READ_MODELS}


async def differing_keys(conn: asyncpg.Connection | asyncpg.Pool, table: Table, left: str, right: str,
                         *, limit: int = 10) -> list[list[Any]]:
    """Up to ``limit`` primary keys whose rows differ between two schemas (or exist in one only)."""
    rows = await conn.fetch(
        f"SELECT coalesce(a.key, b.key)::text AS key FROM ({_rows_sql(table, left)}) AS a "
        f"FULL JOIN ({_rows_sql(table, right)}) AS b ON a.key = b.key "
        f"WHERE a.digest IS DISTINCT FROM b.digest ORDER BY 1 LIMIT $1", limit)
    return [msgspec.json.decode(r["key"]) for r in rows]


async def compare(conn: asyncpg.Connection, table: Table, live: str, rebuilt: str) -> TableCheck:
    """``table`` of the ``live`` schema beside the ``rebuilt`` one: row counts, checksums, differing keys."""
    (live_rows, live_sum), (rebuilt_rows, rebuilt_sum) = [await table_checksum(conn, s, table) for s in (live, rebuilt)]
    equal = live_rows == rebuilt_rows and live_sum == rebuilt_sum
    keys = [] if equal else await differing_keys(conn, table, live, rebuilt)
    return TableCheck(table.name, live_rows, rebuilt_rows, equal, keys)
