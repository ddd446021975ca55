"""The projection runtime: batches of log records folded into the read models, exactly once in effect.

One PostgreSQL transaction per batch writes the read-model rows, the change log, the dead
letters and the projection offsets together, so a crash anywhere replays into the same
result. A batch is folded set-based: the touched rows are loaded with one query per table,
changed in memory in log order and written back with one statement per table. After commit
the changed documents go to Redis in one version-guarded script call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind

from blackboard.domain.lease import Lease
from blackboard.domain.project_state import Budget, Project, Shot, Spec
from blackboard.events.log import LogReader, PartitionedLog, StoredRecord, read_at
from blackboard.events.tracing import distinct, event_span_context, event_trace_id
from blackboard.projector import metrics, tables
from blackboard.projector.cache import CachedDoc, CacheUnavailable, DocumentCache
from blackboard.projector.documents import PROJECT_VIEW_COLUMNS, project_view, task_view
from blackboard.projector.fold import BatchFold, Decoded, Item, Poison, decode, occurred_at, stream_of, touched
from blackboard.projector.tables import STATE_TABLES

logger = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

READ_TIMEOUT = 1.0
LAG_EVERY_SECONDS = 5.0
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 30.0
#: Longest reason kept in a dead letter.
MAX_REASON = 2000
#: Most links a batch span carries (the SDK's default limit): one per command whose events it folds.
MAX_LINKS = 128

# Errors a statement raises because of the data one record carried (a NUL in a text, a value too
# long, a nesting too deep, a duplicate event_id), not because PostgreSQL is unwell.
_DATA_ERRORS = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)


class AppliedBatch(msgspec.Struct, frozen=True):
    """What one ``Projector.apply`` did with its records.

    ``skipped`` were below the stored offset (applied by an earlier batch); ``duplicates`` were
    events already in the change log with the same ``event_id``; ``positions`` is the stored
    next offset of every partition the batch advanced.
    """

    applied: int = 0
    skipped: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    positions: dict[int, int] = {}

    def __add__(self, other: AppliedBatch) -> AppliedBatch:
        return AppliedBatch(
            self.applied + other.applied, self.skipped + other.skipped, self.duplicates + other.duplicates,
            self.dead_letters + other.dead_letters, {**self.positions, **other.positions},
        )


# ── SQL ─────────────────────────────────────────────────────────────────────────────────

_LOCK_OFFSETS = """
SELECT partition, next_offset FROM projection_offsets
WHERE projection = $1 AND topic = $2 AND partition = ANY($3::integer[])
ORDER BY partition FOR UPDATE"""
_ENSURE_OFFSETS = """
INSERT INTO projection_offsets (projection, topic, partition, next_offset)
SELECT $1, $2, p, 0 FROM unnest($3::integer[]) AS p
ON CONFLICT (projection, topic, partition) DO NOTHING"""
_SAVE_OFFSETS = """
INSERT INTO projection_offsets (projection, topic, partition, next_offset)
SELECT $1, $2, * FROM unnest($3::integer[], $4::bigint[])
ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()"""
_LOAD_PROJECTS = "SELECT * FROM projects WHERE id = ANY($1::text[])"
_LOAD_TASKS = "SELECT * FROM tasks WHERE id = ANY($1::text[])"
_LOAD_LEASES = "SELECT * FROM leases WHERE name = ANY($1::text[])"
_LOAD_RECORDED = """
SELECT c.stream, c.stream_version, c.event_id FROM change_log c
JOIN unnest($1::text[], $2::bigint[]) AS k(s, v) ON c.stream = k.s AND c.stream_version = k.v"""
_ALL_SHOTS = "SELECT * FROM shots WHERE project_id = ANY($1::text[])"

_PROJECT_COLUMNS = ("id", "title", "currency", "budget_total", "spent", "global_spec", "version", "partition",
                    "last_offset", "created_at", "updated_at", "state", "status", "reserved", "spec_version", "dna",
                    "reservations")
_UPSERT_PROJECTS = """
INSERT INTO projects (id, title, currency, budget_total, spent, global_spec, version, partition, last_offset,
                      created_at, updated_at, state, status, reserved, spec_version, dna, reservations)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::jsonb[], $7::bigint[],
                     $8::integer[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::jsonb[], $13::text[],
                     $14::numeric[], $15::bigint[], $16::jsonb[], $17::jsonb[])
ON CONFLICT (id) DO UPDATE SET title = excluded.title, currency = excluded.currency,
    budget_total = excluded.budget_total, spent = excluded.spent, global_spec = excluded.global_spec,
    version = excluded.version, partition = excluded.partition, last_offset = excluded.last_offset,
    updated_at = excluded.updated_at, state = excluded.state, status = excluded.status, reserved = excluded.reserved,
    spec_version = excluded.spec_version, dna = excluded.dna, reservations = excluded.reservations"""
_SHOT_COLUMNS = ("project_id", "shot_id", "fields", "version", "created_at", "updated_at")
_UPSERT_SHOTS = """
INSERT INTO shots (project_id, shot_id, fields, version, created_at, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
ON CONFLICT (project_id, shot_id) DO UPDATE SET fields = excluded.fields, version = excluded.version,
    updated_at = excluded.updated_at"""
_ARTIFACT_COLUMNS = ("project_id", "artifact_id", "kind", "uri", "params", "cost", "shot_id", "task_id",
                     "reservation_id", "created_by", "created_at", "version")
_INSERT_ARTIFACTS = """
INSERT INTO artifacts (project_id, artifact_id, kind, uri, params, cost, shot_id, task_id, reservation_id,
                       created_by, created_at, version)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::numeric[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::bigint[])
ON CONFLICT (project_id, artifact_id) DO NOTHING"""
_LEASE_COLUMNS = ("name", "holder", "token", "expires_at", "state", "version", "partition", "last_offset",
                  "created_at", "updated_at")
_UPSERT_LEASES = """
INSERT INTO leases (name, holder, token, expires_at, state, version, partition, last_offset, created_at, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::jsonb[], $6::bigint[],
                     $7::integer[], $8::bigint[], $9::timestamptz[], $10::timestamptz[])
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at,
    state = excluded.state, version = excluded.version, partition = excluded.partition,
    last_offset = excluded.last_offset, updated_at = excluded.updated_at"""
_CHANGE_COLUMNS = ("stream", "stream_version", "partition", "offset", "event_id", "type", "schema_version", "actor",
                   "command_id", "correlation_id", "causation_id", "occurred_at", "payload", "trace_id",
                   "agent_run_id", "agent_model", "prompt_hash")
# A letter set aside again (a retry that failed, a held record still behind one) keeps its row
# and takes the new reason and status.
_INSERT_DEAD_LETTERS = """
INSERT INTO dead_letters (projection, topic, partition, "offset", reason, key, headers, value, stream, status)
SELECT $1, * FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::text[], $6::bytea[], $7::jsonb[],
                         $8::bytea[], $9::text[], $10::text[])
ON CONFLICT (projection, topic, partition, "offset") DO UPDATE SET reason = excluded.reason,
    stream = excluded.stream, status = excluded.status, resolved_at = NULL"""
_BLOCKED_STREAMS = """
SELECT DISTINCT stream FROM dead_letters
WHERE projection = $1 AND status IN ('open', 'held') AND stream = ANY($2::text[])"""
_LOCK_LETTER = """
SELECT id, topic, partition, "offset", stream, status FROM dead_letters WHERE projection = $1 AND id = $2 FOR UPDATE"""
_LOCK_STREAM_LETTERS = """
SELECT id, topic, partition, "offset", stream, status FROM dead_letters
WHERE projection = $1 AND stream = $2 AND status IN ('open', 'held') ORDER BY partition, "offset" FOR UPDATE"""
_RESOLVE_LETTERS = """
UPDATE dead_letters SET status = $3, resolved_at = now()
WHERE projection = $1 AND id = ANY($2::bigint[])"""


def _columns(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> list[list[Any]]:
    """``rows`` turned into one array per column, the shape ``unnest`` takes."""
    return [[row[name] for row in rows] for name in names]


def _change_records(events: Sequence[Decoded]) -> list[tuple[Any, ...]]:
    """The ``change_log`` rows of ``events``, in ``_CHANGE_COLUMNS`` order.

    Note: the payload goes to jsonb as the bytes the log holds (``msgspec.Raw``), never re-encoded.
    """
    return [
        (e.env.stream, e.env.stream_version, e.rec.partition, e.rec.offset, e.env.event_id, e.env.type,
         e.env.schema_version, e.env.actor, e.env.command_id, e.env.correlation_id, e.env.causation_id,
         occurred_at(e.env), msgspec.Raw(e.env.payload), event_trace_id(e.env), e.env.agent_run_id,
         e.env.agent_model, e.env.prompt_hash)
        for e in events
    ]


def _dead_letter_columns(poison: Sequence[Poison]) -> list[list[Any]]:
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


# ── the runtime ─────────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class _Outcome:
    batch: AppliedBatch
    docs: list[CachedDoc]

    def __add__(self, other: _Outcome) -> _Outcome:
        return _Outcome(self.batch + other.batch, self.docs + other.docs)


class Projector:
    """Folds the events topic into the read models of ``pool``'s schema (a pool from ``create_pool``).

    Note: every record below a partition's stored ``next_offset`` is skipped, and the offsets
    rows are locked for the batch, so two projectors of one projection never apply a record twice.
    """

    def __init__(
        self,
        log: PartitionedLog,
        pool: asyncpg.Pool,
        *,
        topic: str,
        projection: str = "main",
        cache: DocumentCache | None = None,
        batch_size: int = 2000,
        notify_channel: str | None = "blackboard_projection",
    ) -> None:
        self.log, self.pool, self.topic, self.projection = log, pool, topic, projection
        self.cache, self.batch_size, self.notify_channel = cache, batch_size, notify_channel
        self.failures = 0
        # (kind, id) of documents whose write-through failed: deleted once Redis answers again.
        self._dirty: set[tuple[str, str]] = set()
        self._lag_at = 0.0

    # ── the loop ──

    async def run(self) -> None:
        """Apply the topic's records as they come, until cancelled.

        On any failure (PostgreSQL or the log away) it backs off, exponentially up to
        ``BACKOFF_MAX`` seconds, and starts again from the stored offsets: it never skips.
        """
        while True:
            try:
                await self._follow()
            except Exception as exc:  # never crash-loop: the stored offsets make a restart safe
                self.failures += 1
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(self.failures - 1, 16))
                logger.warning("projector.retry", error=repr(exc), failures=self.failures, delay=delay)
                await asyncio.sleep(delay)

    async def _follow(self) -> None:
        await self.ensure_offsets(await self.log.partition_count(self.topic))
        reader = self.log.reader(self.topic)
        ahead: asyncio.Task[list[Item]] | None = None
        try:
            for partition, offset in sorted((await self.positions()).items()):
                await reader.seek(partition, offset)
            ahead = asyncio.create_task(self._read(reader))
            while True:
                items = await ahead
                # The next batch is read and decoded while this one's transaction runs.
                ahead = asyncio.create_task(self._read(reader))
                await self._apply_items(items)
                if not items:
                    await self._idle()
                self.failures = 0
        finally:
            await _stop_reading(reader, ahead)

    async def _idle(self) -> None:
        """Work for a quiet moment: flush stale cache keys, and publish the lag (every few seconds)."""
        if self._dirty:
            await self._write_through([])
        now = time.monotonic()
        if now - self._lag_at >= LAG_EVERY_SECONDS:
            self._lag_at = now
            for partition, position in (await self.positions()).items():
                end = await self.log.end_offset(self.topic, partition)
                metrics.LAG.labels(str(partition)).set(max(0, end - position))

    async def _read(self, reader: LogReader) -> list[Item]:
        return self._prepare(await reader.read(max_records=self.batch_size, timeout=READ_TIMEOUT))

    async def ensure_offsets(self, partitions: int) -> None:
        """Give every partition ``0..partitions-1`` an offset row (starting at 0) if it has none."""
        await self.pool.execute(_ENSURE_OFFSETS, self.projection, self.topic, list(range(partitions)))

    async def positions(self) -> dict[int, int]:
        """The stored next offset of every partition of the topic."""
        rows = await self.pool.fetch(
            "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2",
            self.projection, self.topic,
        )
        return {r["partition"]: r["next_offset"] for r in rows}

    # ── one batch ──

    async def apply(self, records: Sequence[StoredRecord]) -> AppliedBatch:
        """Fold ``records`` of this topic in one transaction, each partition's in offset order.

        After commit, the documents of every changed project and task go to the cache.
        """
        return await self._apply_items(self._prepare(records))

    def prepare(self, records: Sequence[StoredRecord]) -> list[Item]:
        """``records`` decoded for ``apply_items``: the CPU half of ``apply``, to overlap with a write."""
        return self._prepare(records)

    async def apply_items(self, items: list[Item]) -> AppliedBatch:
        """The I/O half of ``apply``: fold prepared items in one transaction, then the cache."""
        return await self._apply_items(items)

    async def resolve(self, letter_id: int, *, skip: bool = False) -> Resolution:
        """Retry (after a fix) or skip the dead letter ``letter_id``, then release what its stream held.

        The records are read again from the log and folded by today's code, in log order, in one
        transaction: the letter first (or, skipping, its stream only takes its version), then every
        letter held behind it, until one fails again; those after it stay held.

        Note: the transaction locks the partition's offset row, as every batch does, so the live
        projector cannot hold a new event of the stream behind a letter this call is releasing.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            letter = await conn.fetchrow(_LOCK_LETTER, self.projection, letter_id)
            if letter is None:
                raise DeadLetterError(f"there is no dead letter {letter_id}")
            if letter["status"] in ("applied", "skipped"):
                raise DeadLetterError(f"dead letter {letter_id} is already {letter['status']}")
            await self._lock_offsets(conn, [letter["partition"]])
            letters = [letter]
            if letter["stream"] is not None:
                letters = list(await conn.fetch(_LOCK_STREAM_LETTERS, self.projection, letter["stream"]))
                if letters[0]["id"] != letter_id:
                    raise DeadLetterError(f"dead letter {letter_id} is held behind dead letter {letters[0]['id']} "
                                          f"of {letter['stream']}; resolve that one first")
            records = await read_at(self.log, letter["topic"], [(r["partition"], r["offset"]) for r in letters])
            missing = [r["id"] for r in letters if (r["partition"], r["offset"]) not in records]
            if missing:
                raise DeadLetterError(f"the log no longer holds the records of dead letters {missing}")
            items = [decode(records[(r["partition"], r["offset"])]) for r in letters]
            fold = await self._load(conn, [i for i in items if isinstance(i, Decoded)],
                                    [letter["stream"]] if letter["stream"] else [])
            if skip:
                fold.skip(items[0])
            else:
                fold.fold(items[0])
            for item in items[1:]:
                fold.fold(item)
            docs = await self._write(conn, fold, {})
            again = {(p.rec.partition, p.rec.offset): p for p in fold.poison}
            outcome = Resolution(
                letter["stream"],
                applied=[r["id"] for r in letters[skip:] if (r["partition"], r["offset"]) not in again],
                skipped=[letter_id] if skip else [],
                open=[r["id"] for r in letters if (k := (r["partition"], r["offset"])) in again and not again[k].held],
                held=[r["id"] for r in letters if (k := (r["partition"], r["offset"])) in again and again[k].held],
            )
            await conn.execute(_RESOLVE_LETTERS, self.projection, outcome.applied, "applied")
            await conn.execute(_RESOLVE_LETTERS, self.projection, outcome.skipped, "skipped")
        await self._write_through(docs)
        logger.info("projector.dead_letter_resolved", letter=letter_id, skip=skip, applied=len(outcome.applied),
                    open=len(outcome.open), held=len(outcome.held))
        return outcome

    def _prepare(self, records: Sequence[StoredRecord]) -> list[Item]:
        """``records`` decoded, each partition's in offset order, each offset once."""
        strangers = {r.topic for r in records} - {self.topic}
        if strangers:
            raise ValueError(f"records of topics {sorted(strangers)} given to the projector of {self.topic!r}")
        # A record delivered twice (a reader re-seeked under a batch) is still one record.
        unique = {(r.partition, r.offset): r for r in records}
        return [decode(unique[k]) for k in sorted(unique)]

    async def _apply_items(self, items: list[Item]) -> AppliedBatch:
        if not items:
            return AppliedBatch()
        with self._batch_span(items):
            return await self._apply_batch(items)

    def _batch_span(self, items: Sequence[Item]) -> AbstractContextManager[Span]:
        """A new root span for one batch, linked to the span that decided each of its commands.

        Note: a batch folds the events of many commands, each in its own trace; links (not a
        parent) tie it to all of them. Past ``MAX_LINKS`` commands the rest go unlinked.
        """
        contexts = distinct(event_span_context(i.env) for i in items if isinstance(i, Decoded))
        return tracer.start_as_current_span(
            f"project {self.topic}", context=Context(), kind=SpanKind.CONSUMER,
            links=[Link(c) for c in contexts[:MAX_LINKS]],
            attributes={"messaging.destination.name": self.topic, "messaging.batch.message_count": len(items),
                        "blackboard.projection": self.projection, "blackboard.traces": len(contexts)},
        )

    async def _apply_batch(self, items: list[Item]) -> AppliedBatch:
        started = time.perf_counter()
        async with self.pool.acquire() as conn:
            outcome = await self._transact(conn, items)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(items))
        batch = outcome.batch
        for result, count in (("applied", batch.applied), ("skipped", batch.skipped),
                              ("duplicate", batch.duplicates), ("dead_letter", batch.dead_letters)):
            if count:
                metrics.APPLIED.labels(result).inc(count)
        if self.cache is not None:
            documents = {"blackboard.documents": len(outcome.docs)}
            with tracer.start_as_current_span("cache write-through", attributes=documents):
                await self._write_through(outcome.docs)
        return batch

    async def _transact(self, conn: asyncpg.Connection, items: Sequence[Item]) -> _Outcome:
        try:
            async with conn.transaction():
                return await self._apply_tx(conn, items)
        except _DATA_ERRORS as exc:
            async with conn.transaction():
                return await self._bisect(conn, items, exc)

    async def _bisect(self, conn: asyncpg.Connection, items: Sequence[Item], error: Exception) -> _Outcome:
        """Apply ``items``, whose statements failed with ``error``, by halves until the culprit is alone.

        Note: the culprit goes to the dead letters with PostgreSQL's reason and the rest applies;
        each half runs in a savepoint, so the outcome is the same as one record at a time.
        """
        if len(items) == 1:
            culprit = Poison(items[0].rec, f"rejected by the read model: {error}", stream_of(items[0]))
            return await self._apply_tx(conn, [culprit])
        mid = len(items) // 2
        return await self._attempt(conn, items[:mid]) + await self._attempt(conn, items[mid:])

    async def _attempt(self, conn: asyncpg.Connection, items: Sequence[Item]) -> _Outcome:
        try:
            async with conn.transaction():
                return await self._apply_tx(conn, items)
        except _DATA_ERRORS as exc:
            return await self._bisect(conn, items, exc)

    async def _apply_tx(self, conn: asyncpg.Connection, items: Sequence[Item]) -> _Outcome:
        """Everything a batch writes, inside the caller's transaction."""
        stored = await self._lock_offsets(conn, sorted({i.rec.partition for i in items}))
        fresh = [i for i in items if i.rec.offset >= stored[i.rec.partition]]
        if not fresh:
            return _Outcome(AppliedBatch(skipped=len(items)), [])
        fold = await self._load(conn, [i for i in fresh if isinstance(i, Decoded)])
        fold.blocked = await self._blocked(conn, fresh)
        for item in fresh:
            fold.fold(item)
        positions = {i.rec.partition: i.rec.offset + 1 for i in fresh}
        docs = await self._write(conn, fold, positions)
        batch = AppliedBatch(len(fold.applied), len(items) - len(fresh), fold.duplicates, len(fold.poison), positions)
        return _Outcome(batch, docs)

    async def _lock_offsets(self, conn: asyncpg.Connection, partitions: list[int]) -> dict[int, int]:
        """The stored next offset of ``partitions``, locked until commit (in partition order: no deadlock)."""
        rows = await conn.fetch(_LOCK_OFFSETS, self.projection, self.topic, partitions)
        if len(rows) < len(partitions):
            await conn.execute(_ENSURE_OFFSETS, self.projection, self.topic, partitions)
            rows = await conn.fetch(_LOCK_OFFSETS, self.projection, self.topic, partitions)
        return {r["partition"]: r["next_offset"] for r in rows}

    async def _blocked(self, conn: asyncpg.Connection, items: Sequence[Item]) -> set[str]:
        """The streams of ``items`` held behind an unresolved dead letter."""
        streams = list({s for s in map(stream_of, items) if s is not None})
        rows = await conn.fetch(_BLOCKED_STREAMS, self.projection, streams)
        return {r["stream"] for r in rows}

    async def _load(self, conn: asyncpg.Connection, events: list[Decoded], streams: Sequence[str] = ()) -> BatchFold:
        """The current rows of everything ``events`` touch, one query per table.

        Note: the rows are read without a row lock. The offset rows locked before are enough:
        every event of an entity is in its key's partition, so one batch at a time touches it.
        """
        ids = touched(events)
        for category, _, ident in (s.partition(":") for s in streams):  # rows of records that did not decode
            if category in ids and ident not in ids[category]:
                ids[category].append(ident)
        projects = await _fetch_by(conn, _LOAD_PROJECTS, [ids["project"]], ("id",)) if ids["project"] else {}
        await _project_states(conn, projects)
        leases = await _fetch_by(conn, _LOAD_LEASES, [ids["lease"]], ("name",)) if ids["lease"] else {}
        for row in leases.values():
            row["state"] = msgspec.convert(row["state"], Lease, strict=False)
        states = {category: await tables.load(conn, table, ids[category])
                  for category, table in STATE_TABLES.items() if ids.get(category)}
        fold = BatchFold(projects, recorded={}, leases=leases, states=states)
        fold.recorded = await self._recorded(conn, fold, events)
        return fold

    @staticmethod
    async def _recorded(conn: asyncpg.Connection, fold: BatchFold, events: list[Decoded]) -> dict[tuple[str, int], str]:
        """The change-log entries of the events at or below their stream's current version.

        An event above it cannot be in the change log yet, so the common batch asks nothing.
        """
        def current(e: Decoded) -> int:
            rows = fold.rows(e.category)
            row = rows.get(e.ident) if rows is not None else None
            return int(row["version"]) if row else 0

        older = [e for e in events if e.env.stream_version <= current(e)]
        if not older:
            return {}
        rows = await conn.fetch(_LOAD_RECORDED, [e.env.stream for e in older], [e.env.stream_version for e in older])
        return {(r["stream"], r["stream_version"]): r["event_id"] for r in rows}

    async def _write(self, conn: asyncpg.Connection, fold: BatchFold, positions: dict[int, int]) -> list[CachedDoc]:
        """Write the batch's rows, change log, dead letters and offsets; notify; return the new documents."""
        projects, leases = fold.changed("project"), fold.changed("lease")
        shots, artifacts = fold.shot_rows(), fold.artifact_rows_new()
        caching = self.cache is not None
        project_rows = await _upsert(conn, _UPSERT_PROJECTS + (f" RETURNING {PROJECT_VIEW_COLUMNS}" if caching else ""),
                                     _columns(projects, _PROJECT_COLUMNS))
        if shots:
            await conn.execute(_UPSERT_SHOTS, *_columns(shots, _SHOT_COLUMNS))
        if artifacts:
            await conn.execute(_INSERT_ARTIFACTS, *_columns(artifacts, _ARTIFACT_COLUMNS))
        if leases:
            await conn.execute(_UPSERT_LEASES, *_columns(leases, _LEASE_COLUMNS))
        for category, table in STATE_TABLES.items():
            await tables.upsert(conn, table, fold.changed(category))
        if fold.extra_rows:
            await tables.insert_extra(conn, fold.extra_rows)
        tasks = fold.changed("task")
        task_rows = await conn.fetch(_LOAD_TASKS, [t["id"] for t in tasks]) if caching and tasks else []
        if fold.applied:
            # COPY: the largest write of a batch, and a third faster than INSERT … unnest here.
            await conn.copy_records_to_table("change_log", records=_change_records(fold.applied),
                                             columns=_CHANGE_COLUMNS)
        if fold.poison:
            await conn.execute(_INSERT_DEAD_LETTERS, self.projection, *_dead_letter_columns(fold.poison))
        if positions:
            await conn.execute(_SAVE_OFFSETS, self.projection, self.topic, list(positions), list(positions.values()))
        # Delivered on commit: a reader waiting for a position re-reads the offsets then.
        if self.notify_channel is not None:
            await conn.execute("SELECT pg_notify($1, $2)", self.notify_channel, self.projection)
        return await _documents(conn, project_rows, task_rows) if self.cache is not None else []

    async def _write_through(self, docs: list[CachedDoc]) -> None:
        """Put the batch's documents in the cache; a failing Redis costs freshness, never the batch.

        Note: a document whose write failed may still sit in Redis at an older version (Redis was
        unreachable, not empty). Its key is remembered and deleted as soon as Redis answers again,
        before anything else is written, so a cache that comes back never serves it.
        """
        if self.cache is None or not (docs or self._dirty):
            return
        try:
            if self._dirty:
                await self.cache.delete_many(sorted(self._dirty))
                self._dirty.clear()
            if docs:
                await self.cache.put_many(_latest(docs))
        except CacheUnavailable as exc:
            metrics.CACHE_FAILURES.inc()
            self._dirty.update((d.kind, d.id) for d in docs)
            logger.warning("projector.cache_unavailable", error=str(exc), documents=len(docs),
                           stale_keys=len(self._dirty))


async def _fetch_by(
    conn: asyncpg.Connection, sql: str, args: list[list[Any]], key: tuple[str, ...]
) -> dict[Any, dict[str, Any]]:
    """Rows of ``sql`` as mutable dicts, by the value (or tuple of values) of ``key``'s columns."""
    rows = await conn.fetch(sql, *args)
    if len(key) == 1:
        return {r[key[0]]: dict(r.items()) for r in rows}
    return {tuple(r[k] for k in key): dict(r.items()) for r in rows}


async def _project_states(conn: asyncpg.Connection, rows: dict[Any, dict[str, Any]]) -> None:
    """Turn each project row's ``state`` into the decider's ``Project``.

    Note: a row written before the state column existed has none; its state is rebuilt from its
    columns and its shots (every such project is ``draft`` with nothing reserved, as it was then).
    """
    legacy = [ident for ident, row in rows.items() if row["state"] is None]
    shots: dict[str, dict[str, Shot]] = defaultdict(dict)
    if legacy:
        for shot in await conn.fetch(_ALL_SHOTS, legacy):
            shots[shot["project_id"]][shot["shot_id"]] = Shot(shot["fields"], shot["version"])
    for ident, row in rows.items():
        if row["state"] is None:
            row["state"] = Project(row["title"], row["status"], row["currency"],
                                   Budget(row["budget_total"], row["spent"], row["reserved"]),
                                   Spec(row["global_spec"], row["spec_version"]), shots=shots[ident])
        else:
            row["state"] = msgspec.convert(row["state"], Project, strict=False)


async def _upsert(conn: asyncpg.Connection, sql: str, columns: list[list[Any]]) -> list[Any]:
    if not columns[0]:
        return []
    rows: list[Any] = await conn.fetch(sql, *columns)
    return rows


async def _documents(conn: asyncpg.Connection, projects: list[Any], tasks: list[Any]) -> list[CachedDoc]:
    """The documents of the rows the batch wrote, built from what PostgreSQL stored (as the query API does)."""
    shots: dict[str, list[Any]] = defaultdict(list)
    if projects:
        for shot in await conn.fetch(_ALL_SHOTS, [p["id"] for p in projects]):
            shots[shot["project_id"]].append(shot)
    docs = [_cached("project", p, msgspec.json.encode(project_view(p, shots[p["id"]]))) for p in projects]
    return docs + [_cached("task", t, msgspec.json.encode(task_view(t))) for t in tasks]


def _cached(kind: str, row: Any, doc: bytes) -> CachedDoc:
    return CachedDoc(kind, row["id"], row["version"], row["partition"], row["last_offset"], doc)


def _latest(docs: list[CachedDoc]) -> list[CachedDoc]:
    """One document per key, the newest (a batch applied by halves may carry several)."""
    newest: dict[tuple[str, str], CachedDoc] = {}
    for doc in docs:
        known = newest.get((doc.kind, doc.id))
        if known is None or known.version < doc.version:
            newest[(doc.kind, doc.id)] = doc
    return list(newest.values())


async def _stop_reading(reader: LogReader, ahead: asyncio.Task[list[Item]] | None) -> None:
    """Stop the read in flight and close ``reader``, hiding neither the error nor the cancellation under way."""
    if ahead is not None:
        ahead.cancel()
        await asyncio.gather(ahead, return_exceptions=True)
    with contextlib.suppress(Exception):
        await reader.close()
