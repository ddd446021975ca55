"""The dead letters: records the projection set aside, with the reason, until an operator retries or skips them.

Every statement on the ``dead_letters`` table is here, for the projector (set aside, hold,
resolve) and for the operator's views alike; the SQL itself is in ``projector/sql``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from blackboard.projector.fold import Poison
from blackboard.projector.statements import statement

#: Longest reason kept in a dead letter.
MAX_REASON = 2000


class Resolution(msgspec.Struct, frozen=True):
    """What a ``retry`` or ``skip`` of a dead letter did to it and to the letters held behind it.

    ``applied`` and ``skipped`` are the ids resolved; ``open`` the ids that failed again (with a
    new reason); ``held`` the ids still waiting behind one of those.
    """

    stream: str | None
    applied: list[int] = []
    skipped: list[int] = []
    open: list[int] = []
    held: list[int] = []


class DeadLetterError(Exception):
    """A retry or skip that cannot be done: no such letter, already resolved, or held behind another."""


# ── the projector's ─────────────────────────────────────────────────────────────────────


async def set_aside(conn: asyncpg.Connection, projection: str, poison: Sequence[Poison]) -> None:
    """Store ``poison`` as dead letters of ``projection`` (a letter already there takes the new reason and status)."""
    if poison:
        await conn.execute(statement("insert_dead_letters"), projection, *_columns(poison))


async def blocked(conn: asyncpg.Connection, projection: str, streams: Sequence[str]) -> set[str]:
    """Those of ``streams`` held behind an unresolved dead letter."""
    rows = await conn.fetch(statement("blocked_streams"), projection, list(streams))
    return {r["stream"] for r in rows}


async def lock(conn: asyncpg.Connection, projection: str, letter_id: int) -> asyncpg.Record | None:
    """Dead letter ``letter_id`` (its position, stream and status), locked until commit."""
    row: asyncpg.Record | None = await conn.fetchrow(statement("lock_dead_letter"), projection, letter_id)
    return row


async def lock_stream(conn: asyncpg.Connection, projection: str, stream: str) -> list[asyncpg.Record]:
    """The unresolved dead letters of ``stream``, in log order, locked until commit."""
    return list(await conn.fetch(statement("lock_stream_dead_letters"), projection, stream))


async def mark(conn: asyncpg.Connection, projection: str, ids: Sequence[int], status: str) -> None:
    """Mark the letters ``ids`` resolved as ``status`` (``applied`` or ``skipped``), now."""
    await conn.execute(statement("resolve_dead_letters"), projection, list(ids), status)


def _columns(poison: Sequence[Poison]) -> list[list[Any]]:
    return [
        [_text(p.rec.topic) for p in poison], [p.rec.partition for p in poison], [p.rec.offset for p in poison],
        [_text(p.reason)[:MAX_REASON] for p in poison], [p.rec.key for p in poison],
        [{_text(name): _text(value) for name, value in p.rec.headers} for p in poison],
        [p.rec.value for p in poison], [None if p.stream is None else _text(p.stream) for p in poison],
        ["held" if p.held else "open" for p in poison],
    ]


def _text(raw: str | bytes) -> str:
    """``raw`` as text PostgreSQL takes: bad UTF-8 and lone surrogates escaped, NUL spelled out."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "backslashreplace")
    else:
        text = raw.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


# ── the operator's ──────────────────────────────────────────────────────────────────────


async def newest(pool: asyncpg.Pool, limit: int, status: str | None) -> tuple[list[asyncpg.Record], int]:
    """The ``limit`` newest letters (of ``status`` when given) without headers and bytes, and how many in all."""
    rows = await pool.fetch(statement("list_dead_letters"), limit, status)
    total = await pool.fetchval(statement("count_dead_letters"), status)
    return list(rows), int(total)


async def one(pool: asyncpg.Pool, letter_id: int) -> asyncpg.Record | None:
    """Dead letter ``letter_id`` with its headers, key and value; ``None`` when there is no such id."""
    row: asyncpg.Record | None = await pool.fetchrow(statement("show_dead_letter"), letter_id)
    return row


async def after(pool: asyncpg.Pool, letter: asyncpg.Record) -> list[asyncpg.Record]:
    """The ids and statuses of the letters of ``letter``'s stream after it, in log order."""
    return list(await pool.fetch(statement("dead_letters_after"), letter["projection"], letter["topic"],
                                 letter["stream"], letter["partition"], letter["offset"]))
