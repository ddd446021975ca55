"""Poison handling: a batch a record of which PostgreSQL refuses is applied by halves until that record is
alone (then set aside), and a dead letter is retried or skipped on an operator's word.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, Self, TypeVar

import asyncpg

from blackboard.events.log import PartitionedLog, read_at
from blackboard.projector import dead_letters, rows
from blackboard.projector.cache import CachedDoc
from blackboard.projector.dead_letters import DeadLetterError, Resolution
from blackboard.projector.fold import Decoded, Item, Poison, decode, stream_of

# Errors a statement raises because of the data one record carried (a NUL in a text, a value too
# long, a nesting too deep, a duplicate event_id), not because PostgreSQL is unwell.
DATA_ERRORS = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)


class Summable(Protocol):
    def __add__(self, other: Self) -> Self: ...


OutcomeT = TypeVar("OutcomeT", bound=Summable)
#: Everything a batch of items writes, inside the caller's transaction; what it did.
ApplyTx = Callable[[asyncpg.Connection, Sequence[Item]], Awaitable[OutcomeT]]


async def bisect(conn: asyncpg.Connection, items: Sequence[Item], error: Exception,
                 apply_tx: ApplyTx[OutcomeT]) -> OutcomeT:
    """Apply ``items``, whose statements failed with ``error`` (one of ``DATA_ERRORS``), by halves until the
    culprit is alone, inside the caller's new transaction (the projector's, after the batch's own failed).

    Note: the culprit goes to the dead letters with PostgreSQL's reason and the rest applies;
    each half runs in a savepoint, so the outcome is the same as one record at a time.
    """
    if len(items) == 1:
        culprit = Poison(items[0].rec, f"rejected by the read model: {error}", stream_of(items[0]))
        return await apply_tx(conn, [culprit])
    mid = len(items) // 2
    return await _attempt(conn, items[:mid], apply_tx) + await _attempt(conn, items[mid:], apply_tx)


async def _attempt(conn: asyncpg.Connection, items: Sequence[Item], apply_tx: ApplyTx[OutcomeT]) -> OutcomeT:
    try:
        async with conn.transaction():
            return await apply_tx(conn, items)
    except DATA_ERRORS as exc:
        return await bisect(conn, items, exc, apply_tx)


async def resolve(conn: asyncpg.Connection, log: PartitionedLog, *, projection: str, topic: str, letter_id: int,
                  skip: bool, notify_channel: str | None, caching: bool
                  ) -> tuple[Resolution, list[CachedDoc]]:
    """Retry (after a fix) or skip the dead letter ``letter_id``, then release what its stream held, inside
    the caller's transaction; what it did, and the documents it changed (with ``caching``).

    The records are read again from the log and folded by today's code, in log order: the letter
    first (or, skipping, its stream only takes its version), then every letter held behind it,
    until one fails again; those after it stay held.

    Note: it locks the partition's offset row, as every batch does, so the live projector cannot
    hold a new event of the stream behind a letter this call is releasing.
    """
    letters = await _letters(conn, projection, topic, letter_id)
    letter = letters[0]
    records = await read_at(log, letter["topic"], [(r["partition"], r["offset"]) for r in letters])
    missing = [r["id"] for r in letters if (r["partition"], r["offset"]) not in records]
    if missing:
        raise DeadLetterError(f"the log no longer holds the records of dead letters {missing}")
    items = [decode(records[(r["partition"], r["offset"])]) for r in letters]
    fold = await rows.load(conn, [i for i in items if isinstance(i, Decoded)],
                           [letter["stream"]] if letter["stream"] else [], projection=projection)
    if skip:
        fold.skip(items[0])
    else:
        fold.fold(items[0])
    for item in items[1:]:
        fold.fold(item)
    docs = await rows.write(conn, fold, {}, projection=projection, topic=topic, notify_channel=notify_channel,
                            caching=caching)
    again = {(p.rec.partition, p.rec.offset): p for p in fold.poison}
    outcome = Resolution(
        letter["stream"],
        applied=[r["id"] for r in letters[skip:] if (r["partition"], r["offset"]) not in again],
        skipped=[letter_id] if skip else [],
        open=[r["id"] for r in letters if (k := (r["partition"], r["offset"])) in again and not again[k].held],
        held=[r["id"] for r in letters if (k := (r["partition"], r["offset"])) in again and again[k].held],
    )
    await dead_letters.mark(conn, projection, outcome.applied, "applied")
    await dead_letters.mark(conn, projection, outcome.skipped, "skipped")
    return outcome, docs


async def _letters(conn: asyncpg.Connection, projection: str, topic: str, letter_id: int) -> list[asyncpg.Record]:
    """Dead letter ``letter_id`` and the letters held behind it, in log order, locked with its partition's
    offset row; ``DeadLetterError`` when it cannot be resolved now."""
    letter = await dead_letters.lock(conn, projection, letter_id)
    if letter is None:
        raise DeadLetterError(f"there is no dead letter {letter_id}")
    if letter["status"] in ("applied", "skipped"):
        raise DeadLetterError(f"dead letter {letter_id} is already {letter['status']}")
    await rows.lock_offsets(conn, projection, topic, [letter["partition"]])
    if letter["stream"] is None:
        return [letter]
    letters = await dead_letters.lock_stream(conn, projection, letter["stream"])
    if letters[0]["id"] != letter_id:
        raise DeadLetterError(f"dead letter {letter_id} is held behind dead letter {letters[0]['id']} "
                              f"of {letter['stream']}; resolve that one first")
    return letters
