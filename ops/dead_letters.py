"""``blackboard dead-letters``: the records the projector set aside, read and resolved (retried or skipped)."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from blackboard.events.log import PartitionedLog
from blackboard.ops.offsets import PROJECTION
from blackboard.ops.settings import OpsSettings
from blackboard.projector import dead_letters as letters
from blackboard.projector import generations
from blackboard.projector.cache import DocumentCache
from blackboard.projector.dead_letters import Resolution
from blackboard.projector.runtime import Projector


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
                              skip: bool) -> Resolution:
    """Retry (or skip) dead letter ``id_`` of the live generation and release what its stream held.

    ``pool`` is on the live read-model schema. The documents it changes are written through to the
    live generation's Redis namespace, when there is a cache, as the projector would.
    """
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
