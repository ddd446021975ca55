"""Read models of one row per stream, folded with the decider's own ``evolve``: declared, not hand-written.

A category declares a ``StateTable``: its table, the state type and ``evolve`` of its decider,
and the columns derived from a state. The projector loads the rows a batch touches, folds the
events with ``evolve`` (so the read model shows exactly what the decisions saw), and writes the
rows back with one statement per table. ``extra`` adds insert-only rows beside the row (one per
event, e.g. a checkpoint's entry), in the same transaction. The declarations are in
``projector.tables``.

Note: rows travel to PostgreSQL as one jsonb array and are typed by
``jsonb_populate_recordset(NULL::<table>, …)``: the table's own column types convert each value
(JSON arrays → ``text[]``, RFC 3339 strings → ``timestamptz``, decimal strings → ``numeric``), so
a new read model needs a migration and a ``StateTable``, no SQL of its own: the statements are
made here from the declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from blackboard.projector.migrate import quote_ident

#: The columns every state table has besides its derived ones; ``created_at`` is never updated.
COMMON = ("state", "version", "partition", "last_offset", "created_at", "updated_at")

Extra = Callable[[str, Any, Any, Any], list[tuple[str, dict[str, Any]]]]


@dataclass(frozen=True, slots=True)
class StateTable:
    """The read model of the streams of ``category``: one row per stream in ``table``, keyed by ``key``."""

    category: str
    table: str
    key: str
    state_type: Any
    evolve: Callable[[Any, Any], Any]
    initial: Any
    #: The columns derived from a state (msgspec-encodable values).
    columns: Callable[[Any], dict[str, Any]]
    #: Events that must open the stream: refused on an existing row; any other event on a missing row is refused.
    opener: tuple[type, ...] = ()
    #: (id, event, state after it, envelope) → insert-only rows ``[(table, row)]``.
    extra: Extra | None = None
    #: The state of a row written before the table had a ``state`` column, from its other columns.
    legacy: Callable[[dict[str, Any]], Any] | None = None

    def load_state(self, row: dict[str, Any]) -> Any:
        if row["state"] is None and self.legacy is not None:
            return self.legacy(row)
        return msgspec.convert(row["state"], self.state_type, strict=False)


def _encodable(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with bytes as PostgreSQL's bytea text (``\\x…``): jsonb would carry base64, which bytea does not read."""
    return {k: ("\\x" + v.hex() if isinstance(v, bytes | bytearray) else v) for k, v in row.items()}


async def load(conn: asyncpg.Connection, table: StateTable, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The rows of ``ids`` by id, each with its ``state`` turned into the decider's state type."""
    sql = f"SELECT * FROM {quote_ident(table.table)} WHERE {quote_ident(table.key)} = ANY($1::text[])"
    rows = await conn.fetch(sql, list(ids))
    found = {}
    for r in rows:
        row = dict(r.items())
        row["state"] = table.load_state(row)
        found[row[table.key]] = row
    return found


async def upsert(conn: asyncpg.Connection, table: StateTable, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or update ``rows`` (every derived column and the common ones; ``created_at`` only on insert).

    The derived columns come from each row's final ``state`` here, once per row however many events
    of the batch changed it.
    """
    if not rows:
        return
    derived = [table.columns(row["state"]) for row in rows]
    names = [table.key, *COMMON, *derived[0]]
    cols = ", ".join(map(quote_ident, names))
    updates = ", ".join(f"{quote_ident(n)} = excluded.{quote_ident(n)}" for n in names
                        if n not in (table.key, "created_at"))
    t = quote_ident(table.table)
    await conn.execute(
        f"INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{t}, $1::jsonb) "
        f"ON CONFLICT ({quote_ident(table.key)}) DO UPDATE SET {updates}",
        [_encodable({n: (columns[n] if n in columns else row[n]) for n in names})
         for row, columns in zip(rows, derived, strict=True)])


async def insert_extra(conn: asyncpg.Connection, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Insert the insert-only rows of a batch, one statement per table; a row already there stays."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    for name, row in rows:
        by_table.setdefault(name, []).append(_encodable(row))
    for name, table_rows in by_table.items():
        cols = ", ".join(map(quote_ident, table_rows[0]))
        t = quote_ident(name)
        await conn.execute(f"INSERT INTO {t} ({cols}) SELECT {cols} "
                           f"FROM jsonb_populate_recordset(NULL::{t}, $1::jsonb) ON CONFLICT DO NOTHING", table_rows)
