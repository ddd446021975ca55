"""The PostgreSQL log engine: a table of records with dense, commit-ordered offsets per partition.

The embedded default runs on it; so can any single-site deployment that has PostgreSQL and no
Kafka. The per-partition counter row, locked for the length of the append, is what keeps
offsets dense and visible in order; ``expected_offset`` turns it into a fence for stale writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import msgspec

from blackboard.events.log import (
    LogUnavailable,
    Record,
    StoredRecord,
    TopicDescription,
    TopicMismatch,
    UnknownTopic,
    check_record_sizes,
)
from blackboard.events.postgres import compaction
from blackboard.events.postgres.appends import AppendQueue, Batch
from blackboard.events.postgres.membership import PostgresMembership
from blackboard.events.postgres.schema import SchemaFiles, migrate

POLL_SECONDS = 0.25
#: InternalClientError: a connection the server dropped mid-error is reset on release while still waiting for
#: the server ("cannot switch to state 15; another operation (2) is in progress"); asyncpg then closes it.
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.CannotConnectNowError, TimeoutError, asyncpg.InternalClientError)

_HEADERS_ENCODER = msgspec.msgpack.Encoder()
_HEADERS_DECODER = msgspec.msgpack.Decoder(tuple[tuple[str, bytes], ...])

# Columns by position (the reader's hot loop indexes them): 0 partition, 1 offset, 2 key, 3 value,
# 4 timestamp, 5 headers (msgpack), 6 and 7 header names and values of a record written before 0002.
# No ORDER BY: sorting a batch of full records spilled to disk and doubled the query's time; the
# reader puts the rows in order itself, at almost no cost, since they nearly always come so.
_READ = """
SELECT q.p AS partition, r."offset", r.key, r.value, r.timestamp_ms, r.headers, r.header_keys, r.header_values
FROM unnest($2::int[], $3::bigint[]) AS q(p, o)
CROSS JOIN LATERAL (
    SELECT "offset", key, value, timestamp_ms, headers, header_keys, header_values FROM records
    WHERE topic = $1 AND partition = q.p AND "offset" >= q.o
    ORDER BY "offset" LIMIT $4
) AS r
"""

# Bytes as stored: key, value, and every header name and value. A full scan of the topic's rows:
# an operator's question, never a hot path.
_PARTITION_BYTES = """
SELECT p.partition, coalesce(sum(
    coalesce(octet_length(r.key), 0) + coalesce(octet_length(r.value), 0) + coalesce(octet_length(r.headers), 0)
    + (SELECT coalesce(sum(octet_length(k)), 0) FROM unnest(r.header_keys) AS k)
    + (SELECT coalesce(sum(octet_length(v)), 0) FROM unnest(r.header_values) AS v)
), 0) AS bytes
FROM partitions AS p
LEFT JOIN records AS r ON r.topic = p.topic AND r.partition = p.partition
WHERE p.topic = $1
GROUP BY p.partition
ORDER BY p.partition
"""


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a log connection goes back to its pool (asyncpg has already rolled back an open
    transaction): the log never changes a session (no SET, LISTEN or lock on a pooled connection), and the
    default reset query cost a round trip per append."""


def _position(rec: StoredRecord) -> tuple[int, int]:
    return rec.partition, rec.offset


async def _adopt(conn: asyncpg.Connection) -> int:
    """How many of the log's files a log made before they were recorded has had (its search path is the log's).

    Note: read from the catalog: such a log kept no record, its start looked for the tables and
    columns. Its membership tables (0003) are made with IF NOT EXISTS, so they need no looking for.
    """
    if await conn.fetchval("SELECT to_regclass('records')") is None:
        return 0
    blob = await conn.fetchval("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('records') "
                               "AND attname = 'headers' AND NOT attisdropped")
    return 2 if blob else 1


#: The log's schema, and the membership leases beside it: ``sql/log``, applied at start.
LOG_SCHEMA = SchemaFiles("blackboard.events.postgres", "sql/log", "log_migrations", adopt=_adopt)


class PostgresLog:
    """``PartitionedLog`` on a PostgreSQL schema (``blackboard_log`` by default)."""

    engine = "postgres"

    def __init__(self, dsn: str, *, schema: str = "blackboard_log", max_record_bytes: int = 1_048_576,
                 pool_min: int = 1, pool_max: int = 10) -> None:
        self.dsn, self.schema, self.max_record_bytes = dsn, schema, max_record_bytes
        self.pool_min, self.pool_max = pool_min, pool_max
        self.channel = f"{schema}_append"
        self._pool: asyncpg.Pool | None = None
        self._appends = AppendQueue(lambda: self.pool, self.channel, _CONNECTION_ERRORS)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise LogUnavailable("the PostgreSQL log is not started")
        return self._pool

    async def start(self) -> None:
        self._appends = AppendQueue(lambda: self.pool, self.channel, _CONNECTION_ERRORS)  # a closed one refuses
        try:
            settings = {"search_path": self.schema, "idle_in_transaction_session_timeout": "10s"}
            # The migration takes a session lock: it runs on a connection of its own, closed after it, so
            # that the pool's connections never hold session state (see ``_keep_session``).
            conn = await asyncpg.connect(self.dsn, server_settings=settings)
            try:
                await migrate(conn, self.schema, LOG_SCHEMA)
            finally:
                await conn.close()
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.pool_min, max_size=self.pool_max, reset=_keep_session,
                # A process paused in the middle of a transaction (SIGSTOP, a long GC) must not hold a
                # partition's row lock forever: the server ends such a transaction, nothing appended.
                server_settings=settings)
        except _CONNECTION_ERRORS as exc:
            raise LogUnavailable(f"PostgreSQL log unreachable: {exc!r}") from exc

    async def close(self) -> None:
        await self._appends.close()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5.0)
            except TimeoutError:
                # A connection still checked out by a cancelled task would make close() wait forever.
                self._pool.terminate()
            self._pool = None

    async def compact(self, *, now_ms: int | None = None) -> dict[str, int]:
        """Compact the compacted topics once (``events.postgres.compaction``); how many records each lost."""
        try:
            return await compaction.compact(self.pool, now_ms=now_ms)
        except _CONNECTION_ERRORS as exc:
            raise LogUnavailable(f"PostgreSQL log unreachable: {exc!r}") from exc

    async def compact_forever(self, every: float) -> None:
        """Compact the compacted topics every ``every`` seconds until cancelled, as a broker's log cleaner does."""
        await compaction.run(self.pool, every)

    async def create_topic(self, topic: str, partitions: int, *, config: Mapping[str, str] | None = None) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                "INSERT INTO topics (topic, partitions, config) VALUES ($1, $2, $3::jsonb) "
                "ON CONFLICT (topic) DO NOTHING RETURNING partitions",
                topic, partitions, json.dumps(dict(config or {})))
            if inserted is None:
                existing = await conn.fetchval("SELECT partitions FROM topics WHERE topic = $1", topic)
                if existing != partitions:
                    raise TopicMismatch(f"topic {topic!r} has {existing} partitions, not {partitions}")
                return
            await conn.execute("INSERT INTO partitions (topic, partition) SELECT $1, generate_series(0, $2 - 1)",
                               topic, partitions)

    async def partition_count(self, topic: str) -> int:
        count = await self._fetchval("SELECT partitions FROM topics WHERE topic = $1", topic)
        if count is None:
            raise UnknownTopic(f"topic {topic!r} does not exist")
        return int(count)

    async def describe_topic(self, topic: str) -> TopicDescription:
        """The configuration given at creation, and the stored bytes of key, value and headers per partition."""
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow("SELECT partitions, config::text AS config FROM topics WHERE topic = $1",
                                          topic)
                sizes = await conn.fetch(_PARTITION_BYTES, topic) if row is not None else []
        except _CONNECTION_ERRORS as exc:
            raise LogUnavailable(f"PostgreSQL log unreachable: {exc!r}") from exc
        if row is None:
            raise UnknownTopic(f"topic {topic!r} does not exist")
        config = {str(k): str(v) for k, v in json.loads(row["config"]).items()}
        return TopicDescription(topic, int(row["partitions"]), config,
                                {int(r["partition"]): int(r["bytes"]) for r in sizes})

    async def end_offset(self, topic: str, partition: int) -> int:
        end = await self._fetchval("SELECT next_offset FROM partitions WHERE topic = $1 AND partition = $2",
                                   topic, partition)
        if end is None:
            raise UnknownTopic(f"{topic}[{partition}] does not exist")
        return int(end)

    async def append(self, topic: str, partition: int, records: Sequence[Record], *,
                     expected_offset: int | None = None) -> int:
        if not records:
            raise ValueError("append needs at least one record")
        keys, headers, values, stamps = self._columns(records)
        # Batches of other partitions appended meanwhile share the statement and its commit (appends.py).
        return await self._appends.append(Batch(topic, partition, expected_offset, keys, headers, values, stamps))

    def _columns(self, records: Sequence[Record]) -> tuple[list[bytes | None], list[bytes], list[bytes | None],
                                                           list[int]]:
        """The records as the append's four arrays: keys, headers (msgpack), values, timestamps."""
        now_ms = int(time.time() * 1000)
        check_record_sizes(records, self.max_record_bytes)
        return ([r.key for r in records], [_HEADERS_ENCODER.encode(r.headers) for r in records],
                [r.value for r in records],
                [r.timestamp_ms if r.timestamp_ms is not None else now_ms for r in records])

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self.pool.fetchval(sql, *args)
        except _CONNECTION_ERRORS as exc:
            raise LogUnavailable(f"PostgreSQL log unreachable: {exc!r}") from exc

    def reader(self, topic: str) -> PostgresLogReader:
        return PostgresLogReader(self, topic)

    def membership(self, group: str, topic: str, *, member_id: str,
                   session_timeout: float = 10.0) -> PostgresMembership:
        """A member of ``group`` holding leases on partitions of ``topic`` (see ``PostgresMembership``)."""
        return PostgresMembership(self, group, topic, member_id=member_id, session_timeout=session_timeout)


class PostgresLogReader:
    """Reads assigned partitions forward; waits on the append notification or polls."""

    def __init__(self, log: PostgresLog, topic: str) -> None:
        self.log, self.topic = log, topic
        self.positions: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    async def seek(self, partition: int, offset: int) -> None:
        self.positions[partition] = offset

    async def read(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[StoredRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._wake.clear()
            records = await self._fetch(max_records)
            left = deadline - loop.time()
            if records or left <= 0 or not self.positions:
                return records
            await self._listen()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(left, POLL_SECONDS))

    async def _fetch(self, max_records: int) -> list[StoredRecord]:
        if not self.positions:
            return []
        parts = sorted(self.positions)
        per_partition = max(1, max_records // len(parts))
        try:
            rows = await self.log.pool.fetch(_READ, self.topic, parts, [self.positions[p] for p in parts],
                                             per_partition)
        except _CONNECTION_ERRORS as exc:
            raise LogUnavailable(f"reading {self.topic} failed: {exc!r}") from exc
        topic, decode = self.topic, _HEADERS_DECODER.decode
        out = [
            StoredRecord(topic, r[0], r[1], r[2], r[3],
                         decode(r[5]) if r[5] is not None else tuple(zip(r[6], r[7], strict=True)), r[4])
            for r in rows
        ]
        out.sort(key=_position)
        for rec in out:
            self.positions[rec.partition] = rec.offset + 1
        return out

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.log.dsn)
            await self._listener.add_listener(self.log.channel, self._on_notify)
        except _CONNECTION_ERRORS:
            self._listener = None  # polling still works; try to listen again next time

    def _on_notify(self, *args: object) -> None:
        payload = str(args[-1])
        if payload.startswith(self.topic + ":"):
            self._wake.set()

    async def close(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2.0)
            self._listener = None
