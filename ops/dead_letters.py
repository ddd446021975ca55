"""``blackboard dead-letters``: the records the projector set aside, read and resolved (retried or skipped)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import msgspec

from blackboard.events.log import PartitionedLog, read_at
from blackboard.events.skips import Skip, skip_of_record, skip_record
from blackboard.ops.offsets import PROJECTION
from blackboard.ops.settings import OpsSettings
from blackboard.projector import dead_letters as letters
from blackboard.projector import generations
from blackboard.projector.cache import DocumentCache
from blackboard.projector.dead_letters import DeadLetterError, Resolution
from blackboard.projector.runtime import Projector

#: How long a skip waits for the live projector to apply its record before applying it itself.
SETTLE_SECONDS = 3.0


class DeadLetter(msgspec.Struct, frozen=True):
    """``status``: ``open`` (waits for a retry or skip), ``held`` (behind an earlier letter of its
    ``stream``), ``applied`` or ``skipped`` (resolved at ``resolved_at``)."""

    id: int
    projection: str
    topic: str
    partition: int
    offset: int
    reason: str
    created_at: datetime
    stream: str | None
    status: str
    resolved_at: datetime | None


class Bytes(msgspec.Struct, frozen=True):
    """Stored bytes for a reader: the text when they are UTF-8, else their hex."""

    encoding: str
    data: str


class DeadLetterDetail(DeadLetter, frozen=True):
    headers: dict[str, str]
    key: Bytes | None
    value: Bytes | None


class DeadLettersReport(msgspec.Struct, frozen=True):
    """The newest ``dead_letters`` (by id, newest first) and how many there are in all."""

    dead_letters: list[DeadLetter]
    total: int


async def dead_letters(pool: asyncpg.Pool, *, limit: int = 50, status: str | None = None) -> DeadLettersReport:
    """The ``limit`` newest dead letters (of ``status`` when given), without their headers and bytes."""
    try:
        rows, total = await letters.newest(pool, limit, status)
    except asyncpg.UndefinedTableError:
        return DeadLettersReport([], 0)
    return DeadLettersReport([DeadLetter(**dict(r.items())) for r in rows], int(total))


async def dead_letter(pool: asyncpg.Pool, id_: int) -> DeadLetterDetail | None:
    """One dead letter with its headers, key and value; ``None`` when there is no such id."""
    try:
        row = await letters.one(pool, id_)
    except asyncpg.UndefinedTableError:
        return None
    if row is None:
        return None
    fields = dict(row.items())
    fields.update(key=readable(fields["key"]), value=readable(fields["value"]))
    return DeadLetterDetail(**fields)


async def resolve_dead_letter(log: PartitionedLog, pool: asyncpg.Pool, settings: OpsSettings, id_: int, *,
                              skip: bool, operator: str = "operator", reason: str = "") -> Resolution:
    """Retry (or skip) dead letter ``id_`` of the live generation and release what its stream held.

    ``pool`` is on the live read-model schema. The documents it changes are written through to the
    live generation's Redis namespace, when there is a cache, as the projector would.

    Note: a skip is first recorded in the log, after the skipped record (``events.skips``: by
    ``operator``, for ``reason``), so that every fold applies it; the answer says what the live
    projector did with it, or, when none took it up within ``SETTLE_SECONDS``, what applying it
    here did (the projector then finds it applied).
    """
    if not skip:
        return await _resolve(log, pool, settings, id_, skip=False)
    skip_ = await record_skip(log, pool, id_, operator=operator, reason=reason)
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        settled = await _settled(pool, id_, skip_)
        if settled is not None:
            return settled
        await asyncio.sleep(0.05)
    try:  # no live projector took it up: apply it here (the projector will find it applied)
        return await _resolve(log, pool, settings, id_, skip=True)
    except (DeadLetterError, asyncpg.DeadlockDetectedError):
        settled = await _settled(pool, id_, skip_)
        if settled is None:
            raise
        return settled


async def record_skip(log: PartitionedLog, pool: asyncpg.Pool, id_: int, *, operator: str, reason: str) -> Skip:
    """Append the skip of dead letter ``id_`` to its partition of the log; ``DeadLetterError`` when it cannot be
    skipped (no such letter, resolved already, held behind another, or its record gone from the log)."""
    row = await letters.one(pool, id_)
    if row is None:
        raise DeadLetterError(f"there is no dead letter {id_}")
    if row["status"] in ("applied", "skipped"):
        raise DeadLetterError(f"dead letter {id_} is already {row['status']}")
    if row["status"] == "held":
        raise DeadLetterError(f"dead letter {id_} is held behind an earlier dead letter of {row['stream']}; "
                              "resolve that one first")
    position = (row["partition"], row["offset"])
    found = await read_at(log, row["topic"], [position])
    if position not in found:
        raise DeadLetterError(f"the log no longer holds the record of dead letter {id_}")
    skip = skip_of_record(found[position], operator=operator, reason=reason, at=datetime.now(UTC))
    await log.append(row["topic"], row["partition"], [skip_record(skip)])
    return skip


async def _settled(pool: asyncpg.Pool, id_: int, skip: Skip) -> Resolution | None:
    """What the live projector did with the skip of letter ``id_`` (it applied the record first), or ``None``."""
    row = await letters.one(pool, id_)
    if row is None or row["status"] != "skipped":
        return None
    later = await letters.after(pool, row)
    by = {status: [r["id"] for r in later if r["status"] == status] for status in ("applied", "open", "held")}
    return Resolution(skip.stream, applied=by["applied"], skipped=[id_], open=by["open"], held=by["held"])


async def _resolve(log: PartitionedLog, pool: asyncpg.Pool, settings: OpsSettings, id_: int, *,
                   skip: bool) -> Resolution:
    import redis.asyncio as aioredis

    redis = cache = None
    if settings.redis_url is not None:
        generation = await generations.live(pool, settings.read_schema)
        redis = aioredis.from_url(settings.redis_url.get_secret_value(), socket_timeout=2.0)
        cache = DocumentCache(redis, prefix=generations.cache_prefix(settings.redis_prefix, generation.number),
                              ttl_seconds=settings.cache_ttl_seconds)
    try:
        projector = Projector(log, pool, topic=settings.events_topic, projection=PROJECTION, cache=cache)
        return await projector.resolve(id_, skip=skip)
    finally:
        if redis is not None:
            await redis.aclose()


def readable(raw: bytes | None) -> Bytes | None:
    """``raw`` as text when it is valid UTF-8, else as hex."""
    if raw is None:
        return None
    try:
        return Bytes("utf-8", raw.decode("utf-8"))
    except UnicodeDecodeError:
        return Bytes("hex", raw.hex())
