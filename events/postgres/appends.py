"""Group commit across partitions: the batches appended at the same moment share one statement.

Each partition has one writer, which appends one batch at a time; with several partitions busy,
each batch used to be a transaction of its own: a commit, a WAL flush and a wake-up of every
listening reader per batch. Here the batches that arrive while a statement runs go together in
the next one, so a moment's batches cost one transaction and one flush.

Nothing about a batch changes: it lands whole at dense offsets, or not at all; its fence
(``expected_offset``) is checked against the partition's counter, under the counter row's lock,
held until the commit; and it is acknowledged only after the commit. The counter rows are locked
in (topic, partition) order, so two statements never wait on each other in a cycle. A batch
whose fence fails is refused alone; the others of its statement still land.

The statements keep their connections (one per statement at once) rather than take one from the pool and give
it back each time: the pool's acquire and release cost more CPU than the statement's round trip. A connection
that fails or closes goes back to the pool, and the next statement takes another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import Histogram

from blackboard.events.log import LogUnavailable, OffsetConflict, UnknownTopic

# $1..$4: one row per batch; $5..$11: one row per record, naming its batch's partition and its place in it.
_APPEND_MANY = """
WITH wanted AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[]) AS w(topic, partition, n, expected)
), locked AS MATERIALIZED (
    SELECT p.topic, p.partition, p.next_offset FROM partitions AS p JOIN wanted AS w USING (topic, partition)
    ORDER BY p.topic, p.partition FOR UPDATE OF p
), moved AS (
    UPDATE partitions AS p SET next_offset = l.next_offset + w.n
    FROM wanted AS w JOIN locked AS l USING (topic, partition)
    WHERE p.topic = w.topic AND p.partition = w.partition AND (w.expected IS NULL OR l.next_offset = w.expected)
    RETURNING p.topic, p.partition, l.next_offset AS base
), written AS (
    INSERT INTO records (topic, partition, "offset", key, headers, value, timestamp_ms)
    SELECT r.topic, r.partition, m.base + r.i, r.key, r.headers, r.value, r.ts
    FROM unnest($5::text[], $6::int[], $7::bigint[], $8::bytea[], $9::bytea[], $10::bytea[], $11::bigint[])
        AS r(topic, partition, i, key, headers, value, ts)
    JOIN moved AS m USING (topic, partition)
)
SELECT m.topic, m.partition, m.base, pg_notify($12, m.topic || ':' || m.partition) FROM moved AS m
"""

#: Batches per statement: how many partitions' appends share one commit (and one WAL flush).
BATCHES = Histogram("blackboard_log_statement_batches", "Batches appended by one statement of the PostgreSQL log",
                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64))
#: Statements at once. While they run, what arrives waits and goes together in the next.
IN_FLIGHT = 2

_ENDS = """
SELECT p.topic, p.partition, p.next_offset FROM partitions AS p
JOIN unnest($1::text[], $2::int[]) AS w(topic, partition) USING (topic, partition)
"""


@dataclass(slots=True)
class Batch:
    """One partition's records as the append's columns, and the future of its first offset."""

    topic: str
    partition: int
    expected: int | None
    keys: list[bytes | None]
    headers: list[bytes]
    values: list[bytes | None]
    stamps: list[int]
    future: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AppendQueue:
    """Appends batches, those that wait meanwhile together in one statement, one statement at a time."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], channel: str, errors: tuple[type[BaseException], ...],
                 *, in_flight: int = IN_FLIGHT) -> None:
        self._pool, self.channel, self._errors, self.in_flight = pool, channel, errors, in_flight
        self._waiting: list[Batch] = []
        #: Connections kept between statements (at most ``in_flight``): the pool's acquire and release cost more
        #: CPU than the statement's own round trip.
        self._idle: list[asyncpg.Connection] = []
        #: The statements running, each with its batches.
        self._running: dict[asyncio.Task[None], list[Batch]] = {}
        #: Statements run and batches they carried (how many share a commit: batches / statements).
        self.statements = self.batches = 0
        self._closed = False

    async def append(self, batch: Batch) -> int:
        """The offset of the batch's first record once its statement has committed.

        Raises ``OffsetConflict`` (nothing appended) when its fence failed, ``UnknownTopic``, or
        ``LogUnavailable`` when the statement failed (it may or may not have committed).
        """
        if self._closed:
            raise LogUnavailable("the PostgreSQL log is closed")
        self._waiting.append(batch)
        if len(self._running) < self.in_flight:
            self._start()
        # A caller cancelled meanwhile leaves its batch to the statement: appended or not, as a cut connection.
        return await asyncio.shield(batch.future)

    def _start(self) -> None:
        """Run a statement with every batch waiting (one per partition: the next waits its turn)."""
        taken: list[Batch] = []
        later: list[Batch] = []
        seen: set[tuple[str, int]] = set()
        for batch in self._waiting:
            key = (batch.topic, batch.partition)
            (later if key in seen else taken).append(batch)
            seen.add(key)
        self._waiting = later
        task = asyncio.create_task(self._run(taken), name="log-append")
        self._running[task] = taken
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._waiting and not self._closed and len(self._running) < self.in_flight:
            self._start()

    async def close(self) -> None:
        """Stop appending; every batch not yet answered gets ``LogUnavailable`` (it may or may not have landed)."""
        self._closed = True
        running, self._running = self._running, {}
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for batch in [*(b for taken in running.values() for b in taken), *self._waiting]:
            _settle(batch, LogUnavailable("the log closed with the append in flight; it may or may not have happened"))
        self._waiting = []
        while (conn := self._kept()) is not None:
            with contextlib.suppress(Exception):
                await self._pool().release(conn)

    async def _run(self, taken: list[Batch]) -> None:
        self.statements, self.batches = self.statements + 1, self.batches + len(taken)
        BATCHES.observe(len(taken))
        conn: asyncpg.Connection | None = None
        try:
            conn = self._kept() or await self._pool().acquire()
            rows = await conn.fetch(_APPEND_MANY, *_columns(taken), self.channel)
            bases = {(r[0], r[1]): int(r[2]) for r in rows}
            refused = [b for b in taken if (b.topic, b.partition) not in bases]
            ends = await self._ends(conn, refused) if refused else {}
        except self._errors as exc:
            await self._drop(conn, broken=True)
            failure = LogUnavailable(f"append failed; it may or may not have happened: {exc!r}")
            for batch in taken:
                _settle(batch, failure)
            return
        except asyncio.CancelledError:
            await self._drop(conn, broken=True)
            raise
        except Exception as exc:  # not an outage: every batch of the statement gets it
            await self._drop(conn, broken=False)
            for batch in taken:
                _settle(batch, exc)
            return
        if self._closed:
            await self._drop(conn, broken=False)
        else:
            self._idle.append(conn)
        for batch in taken:
            key = (batch.topic, batch.partition)
            if key in bases:
                _settle(batch, bases[key])
            elif ends.get(key) is None or batch.expected is None:
                _settle(batch, UnknownTopic(f"{batch.topic}[{batch.partition}] does not exist"))
            else:
                _settle(batch, OffsetConflict(batch.topic, batch.partition, batch.expected, ends[key],
                                              appended=False))

    async def _ends(self, conn: asyncpg.Connection, batches: list[Batch]) -> dict[tuple[str, int], int]:
        rows = await conn.fetch(_ENDS, [b.topic for b in batches], [b.partition for b in batches])
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def _kept(self) -> asyncpg.Connection | None:
        """A kept connection still open, or ``None``. One that closed meanwhile went back to the pool by itself
        (asyncpg detaches it from us: any call on it raises)."""
        while self._idle:
            conn = self._idle.pop()
            with contextlib.suppress(asyncpg.InterfaceError):
                if not conn.is_closed():
                    return conn
        return None

    async def _drop(self, conn: asyncpg.Connection | None, *, broken: bool) -> None:
        """Give ``conn`` back to the pool after a failed statement; closed first when it may be unusable (an
        outage, or a statement cut short), so that the pool opens a new one. One that closed went back already."""
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if broken:
                conn.terminate()
            await self._pool().release(conn)


def _columns(batches: list[Batch]) -> tuple[Sequence[object], ...]:
    """The statement's arguments $1..$11 for ``batches``."""
    topics: list[str] = []
    partitions: list[int] = []
    places: list[int] = []
    keys: list[bytes | None] = []
    headers: list[bytes] = []
    values: list[bytes | None] = []
    stamps: list[int] = []
    for b in batches:
        n = len(b.keys)
        topics += [b.topic] * n
        partitions += [b.partition] * n
        places += range(n)
        keys += b.keys
        headers += b.headers
        values += b.values
        stamps += b.stamps
    return ([b.topic for b in batches], [b.partition for b in batches], [len(b.keys) for b in batches],
            [b.expected for b in batches], topics, partitions, places, keys, headers, values, stamps)


def _settle(batch: Batch, outcome: int | BaseException) -> None:
    if batch.future.done():
        return
    if isinstance(outcome, BaseException):
        batch.future.set_exception(outcome)
    else:
        batch.future.set_result(outcome)
