"""Operator views of a running system: topics, projection lag, dead letters, and a rebuild check.

Each function returns a msgspec Struct that the CLI prints as a table or as one JSON document.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from blackboard.config import Settings
from blackboard.events.log import PartitionedLog, UnknownTopic
from blackboard.projector import generations
from blackboard.projector.cache import DocumentCache
from blackboard.projector.migrate import create_pool, migrate, quote_ident
from blackboard.projector.runtime import Projector, Resolution
from blackboard.projector.tables import COMMON, STATE_TABLES

PROJECTION = "main"


@contextlib.asynccontextmanager
async def opened_log(settings: Settings, postgres_url: str) -> AsyncIterator[PartitionedLog]:
    """The started log the settings select, closed on exit."""
    from blackboard.app import open_log

    log = open_log(settings, postgres_url)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def log_factory(settings: Settings, postgres_url: str) -> Callable[[], PartitionedLog]:
    """Opens the log the settings select, in any process: it pickles, for a rebuild's worker processes."""
    from blackboard.app import open_log

    return functools.partial(open_log, settings, postgres_url)


def quiet_logging() -> None:
    """Logging as the CLI sets it (warnings and worse, JSON lines on stderr): a rebuild's workers start with it."""
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)


async def live_schema(settings: Settings, postgres_url: str) -> str:
    """The schema of the live generation of the read models (see ``blackboard.projector.generations``)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        return (await generations.live(conn, settings.read_schema)).schema
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def read_pool(settings: Settings, postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the live read-model schema, closed on exit."""
    pool = await create_pool(postgres_url, await live_schema(settings, postgres_url), min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()

# ── topics ──────────────────────────────────────────────────────────────────────────────


class PartitionEnd(msgspec.Struct, frozen=True):
    """``size_bytes`` is ``None`` where the engine cannot tell (the Kafka log)."""

    partition: int
    end_offset: int
    size_bytes: int | None = None


class TopicReport(msgspec.Struct, frozen=True):
    """One topic: ``exists`` is false (and ``partitions`` empty) when it was never created.

    ``config`` is the topic's configuration as the engine stores it, ``None`` where it cannot tell;
    ``size_bytes`` the sum of the partitions' sizes, ``None`` where they are unknown.
    """

    name: str
    exists: bool
    partitions: list[PartitionEnd]
    total: int
    size_bytes: int | None = None
    config: dict[str, str] | None = None


class TopicsReport(msgspec.Struct, frozen=True):
    engine: str
    topics: list[TopicReport]
    total: int


async def end_offsets(log: PartitionedLog, topic: str) -> dict[int, int]:
    """The exact end offset of every partition of ``topic``; ``UnknownTopic`` when it does not exist."""
    partitions = await log.partition_count(topic)
    return {p: await log.end_offset(topic, p) for p in range(partitions)}


async def topics(log: PartitionedLog, settings: Settings) -> TopicsReport:
    """Partitions, end offsets, sizes and configuration of the events, commands and command-results topics."""
    reports = [await _topic(log, name)
               for name in (settings.events_topic, settings.commands_topic, settings.results_topic)]
    return TopicsReport(log.engine, reports, sum(t.total for t in reports))


async def _topic(log: PartitionedLog, name: str) -> TopicReport:
    try:
        ends = await end_offsets(log, name)
        described = await log.describe_topic(name)
    except UnknownTopic:
        return TopicReport(name, False, [], 0)
    sizes = described.partition_bytes
    parts = [PartitionEnd(p, e, None if sizes is None else sizes.get(p, 0)) for p, e in ends.items()]
    size = None if sizes is None else sum(sizes.values())
    return TopicReport(name, True, parts, sum(ends.values()), size, described.config)


# ── lag ─────────────────────────────────────────────────────────────────────────────────


class PartitionLag(msgspec.Struct, frozen=True):
    """``next_offset`` is ``None`` when the projection has no offset row for the partition yet (lag counts from 0).

    ``rate`` is how many events per second the projection advanced while sampled (``None`` when not
    sampled); ``eta_seconds`` is ``lag / rate``: 0 with no lag, ``None`` when the rate is 0 or unknown.
    """

    partition: int
    next_offset: int | None
    end_offset: int
    lag: int
    rate: float | None = None
    eta_seconds: float | None = None


class LagReport(msgspec.Struct, frozen=True):
    """``eta_seconds`` is the slowest partition's (they catch up side by side), ``None`` if one never will."""

    projection: str
    topic: str
    partitions: list[PartitionLag]
    total: int
    sample_seconds: float = 0.0
    eta_seconds: float | None = None


def eta(lag: int, rate: float | None) -> float | None:
    """Seconds to catch up ``lag`` events at ``rate`` per second: 0 with no lag, ``None`` when it never will."""
    if lag <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return lag / rate


async def stored_offsets(pool: asyncpg.Pool, topic: str, projection: str = PROJECTION) -> dict[int, int]:
    """The projection's stored next offset per partition; empty when its schema was never migrated."""
    try:
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2",
            projection, topic)
    except asyncpg.UndefinedTableError:
        return {}
    return {r["partition"]: r["next_offset"] for r in rows}


async def lag(log: PartitionedLog, pool: asyncpg.Pool, settings: Settings, *,
              sample_seconds: float = 0.0) -> LagReport:
    """Per partition of the events topic: the projection's next offset, the log's end, and the difference.

    With ``sample_seconds`` the stored offsets are read twice that far apart, giving the projection's
    rate and the time to catch up at that rate.

    Note: the estimate ignores appends that arrive meanwhile; under steady traffic it is a lower bound.
    """
    topic = settings.events_topic
    first: dict[int, int] | None = None
    started = time.monotonic()
    if sample_seconds > 0:
        first = await stored_offsets(pool, topic)
        started = time.monotonic()
        await asyncio.sleep(sample_seconds)
    ends = await end_offsets(log, topic)
    stored = await stored_offsets(pool, topic)
    elapsed = time.monotonic() - started
    rows = []
    for p, end in ends.items():
        behind = max(0, end - stored.get(p, 0))
        rate = None if first is None else max(0, stored.get(p, 0) - first.get(p, 0)) / elapsed
        rows.append(PartitionLag(p, stored.get(p), end, behind, rate, eta(behind, rate)))
    etas = [r.eta_seconds for r in rows]
    overall = None if None in etas else max((e for e in etas if e is not None), default=0.0)
    return LagReport(PROJECTION, topic, rows, sum(r.lag for r in rows), sample_seconds, overall)


# ── dead letters ────────────────────────────────────────────────────────────────────────


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


_DEAD_LETTER_COLUMNS = 'id, projection, topic, partition, "offset", reason, created_at, stream, status, resolved_at'


async def dead_letters(pool: asyncpg.Pool, *, limit: int = 50, status: str | None = None) -> DeadLettersReport:
    """The ``limit`` newest dead letters (of ``status`` when given), without their headers and bytes."""
    try:
        rows = await pool.fetch(f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE $2::text IS NULL OR "
                                "status = $2 ORDER BY id DESC LIMIT $1", limit, status)
        total = await pool.fetchval("SELECT count(*) FROM dead_letters WHERE $1::text IS NULL OR status = $1", status)
    except asyncpg.UndefinedTableError:
        return DeadLettersReport([], 0)
    return DeadLettersReport([DeadLetter(**dict(r.items())) for r in rows], int(total))


async def dead_letter(pool: asyncpg.Pool, id_: int) -> DeadLetterDetail | None:
    """One dead letter with its headers, key and value; ``None`` when there is no such id."""
    try:
        row = await pool.fetchrow(
            f"SELECT {_DEAD_LETTER_COLUMNS}, headers, key, value FROM dead_letters WHERE id = $1", id_)
    except asyncpg.UndefinedTableError:
        return None
    if row is None:
        return None
    fields = dict(row.items())
    fields.update(key=readable(fields["key"]), value=readable(fields["value"]))
    return DeadLetterDetail(**fields)


async def resolve_dead_letter(settings: Settings, postgres_url: str, id_: int, *, skip: bool) -> Resolution:
    """Retry (or skip) dead letter ``id_`` of the live generation and release what its stream held.

    The documents it changes are written through to the live generation's Redis namespace, when
    there is a cache, as the projector would.
    """
    import redis.asyncio as aioredis

    async with opened_log(settings, postgres_url) as log, read_pool(settings, postgres_url) as pool:
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


# ── checksums of the read models ────────────────────────────────────────────────────────


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
    Table("leases", ("name",), ("holder", "token", "expires_at", "state", "version", "partition", "last_offset",
                                "created_at", "updated_at")),
    # The state tables: every derived column is a function of ``state``, which is compared.
    *(Table(t.table, (t.key,), COMMON) for t in STATE_TABLES.values()),
    Table("checkpoint_entries", ("thread_id", "seq"), ("sha256", "size", "stored_size", "encoding", "inline",
                                                      "inline_from", "blob", "label", "metadata", "parent_seq")),
    Table("change_log", ("stream", "stream_version"),
          ("partition", "offset", "event_id", "type", "schema_version", "actor", "command_id", "correlation_id",
           "causation_id", "occurred_at", "payload", "trace_id", "agent_run_id", "agent_model", "prompt_hash")),
)


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


# ── verify: the read models against a fresh rebuild ─────────────────────────────────────


class TableCheck(msgspec.Struct, frozen=True):
    """One table compared: ``differing_keys`` holds up to 10 primary keys of rows that differ."""

    table: str
    live_rows: int
    rebuilt_rows: int
    equal: bool
    differing_keys: list[list[Any]]


class VerifyReport(msgspec.Struct, frozen=True):
    """``targets`` are the end offsets when verify started: the rebuild applied exactly the records below them.

    ``live_offsets`` are the live projection's offsets at the comparison; past a target, rows
    changed by newer events may differ for that reason alone (verify a quiet log for an exact answer).
    """

    equal: bool
    targets: dict[int, int]
    live_offsets: dict[int, int]
    tables: list[TableCheck]


class VerifyTimeout(Exception):
    """The rebuild or the live projection did not reach the target offsets in time."""


async def verify(log: PartitionedLog, pool: asyncpg.Pool, postgres_url: str, settings: Settings,
                 *, timeout: float = 60.0) -> VerifyReport:
    """Rebuild the read models from offset 0 into a temporary schema and compare them with the live ones.

    The temporary schema is dropped at the end, whatever happened.
    """
    deadline = time.monotonic() + timeout
    targets = await end_offsets(log, settings.events_topic)
    schema = f"verify_{uuid.uuid4().hex[:16]}"
    try:
        async with _scratch_pool(postgres_url, schema) as scratch:
            # Its own channel: the live query API's waiters need not wake for the rebuild.
            projector = Projector(log, scratch, topic=settings.events_topic, notify_channel="blackboard_verify")
            await rebuild(log, projector, targets, deadline)
        live = await _wait_live(pool, settings.events_topic, targets, deadline)
        async with pool.acquire() as conn:
            live_schema_ = (await generations.live(conn, settings.read_schema)).schema
            tables = [await _compare(conn, t, live_schema_, schema) for t in READ_MODELS]
    finally:
        await asyncio.shield(_drop_schema(pool, schema))
    return VerifyReport(all(t.equal for t in tables), targets, live, tables)


@contextlib.asynccontextmanager
async def _scratch_pool(postgres_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(postgres_url, schema, min_size=1, max_size=2)
    try:
        await migrate(pool, schema)
        yield pool
    finally:
        await pool.close()


async def _drop_schema(pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


async def rebuild(log: PartitionedLog, projector: Projector, targets: Mapping[int, int], deadline: float) -> None:
    """Apply every record of the projector's topic below ``targets`` (per partition), none beyond."""
    reader = log.reader(projector.topic)
    try:
        read = {p: 0 for p in targets}
        for p in (p for p, end in targets.items() if end):
            await reader.seek(p, 0)
        while any(read[p] < end for p, end in targets.items()):
            if time.monotonic() > deadline:
                raise VerifyTimeout(f"the rebuild reached {read}, not {dict(targets)}, in time")
            records = await reader.read(max_records=projector.batch_size, timeout=1.0)
            # Records appended after verify started are left out: both sides stop at the targets.
            await projector.apply([r for r in records if r.offset < targets[r.partition]])
            for r in records:
                read[r.partition] = max(read[r.partition], r.offset + 1)
    finally:
        await reader.close()


async def _wait_live(pool: asyncpg.Pool, topic: str, targets: Mapping[int, int], deadline: float) -> dict[int, int]:
    """The live projection's offsets once every one has reached its target."""
    while True:
        live = await stored_offsets(pool, topic)
        if all(live.get(p, 0) >= end for p, end in targets.items()):
            return live
        if time.monotonic() > deadline:
            raise VerifyTimeout(f"the live projection is at {live}, not at {dict(targets)}; is it running?")
        await asyncio.sleep(0.2)


async def _compare(conn: asyncpg.Connection, table: Table, live: str, rebuilt: str) -> TableCheck:
    (live_rows, live_sum), (rebuilt_rows, rebuilt_sum) = [await table_checksum(conn, s, table) for s in (live, rebuilt)]
    equal = live_rows == rebuilt_rows and live_sum == rebuilt_sum
    keys = [] if equal else await differing_keys(conn, table, live, rebuilt)
    return TableCheck(table.name, live_rows, rebuilt_rows, equal, keys)


# ── a dry run of the projection: a rebuild compared with the live read models, then dropped ──


class DryRunReport(msgspec.Struct, frozen=True):
    """What today's projection code makes of the whole log, beside what the live read models hold.

    ``dead_letters`` are the records it would set aside; ``tables`` compare it with the live
    generation (on a log that moved meanwhile, rows changed since differ for that reason alone).
    """

    records: int
    applied: int
    dead_letters: int
    seconds: float
    equal: bool
    tables: list[TableCheck]


async def dry_run(log: PartitionedLog, settings: Settings, postgres_url: str, *,
                  batch_size: int = 10_000, workers: int | None = None) -> DryRunReport:
    """Fold the whole log with today's code into a scratch generation, compare it, and drop it.

    Nothing the live read models, the cache or the running processes see is written.
    """
    from blackboard.projector.replay import replay

    report = await replay(log, postgres_url, base=settings.read_schema, topic=settings.events_topic,
                          batch_size=batch_size, swap=False, open_log=log_factory(settings, postgres_url),
                          workers=workers, worker_setup=quiet_logging)
    conn = await asyncpg.connect(postgres_url)
    try:
        live = await generations.live(conn, settings.read_schema)
        tables = [await _compare(conn, t, live.schema, report.schema) for t in READ_MODELS]
    finally:
        try:
            await asyncio.shield(generations.drop_one(conn, settings.read_schema, report.generation))
        finally:
            await conn.close()
    return DryRunReport(report.records, report.applied, report.dead_letters, report.seconds,
                        all(t.equal for t in tables), tables)
