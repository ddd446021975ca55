"""The read side: documents from Redis when fresh enough, else PostgreSQL, never failing on Redis."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import structlog

from blackboard.events.partitioner import partition_for
from blackboard.projector.cache import CachedDoc, CacheUnavailable, DocumentCache
from blackboard.projector.documents import (
    PROJECT_VIEW_COLUMNS,
    budget_view,
    dna_view,
    lease_view,
    project_view,
    shot_document,
    spec_view,
    task_view,
)
from blackboard.query_api import history as h
from blackboard.query_api import metrics
from blackboard.query_api.cached_gets import CachedGets
from blackboard.query_api.consistency import OffsetWatch
from blackboard.schemas.envelope import decode_token, stream_partition_key
from blackboard.schemas.errors import InvalidRequest, NotFound, ServiceUnavailable
from blackboard.schemas.tenancy import SEPARATOR
from blackboard.schemas.types import unstorable_text
from blackboard.schemas.views import HistoryEntry, Page, StreamState, TaskView

log = structlog.get_logger(__name__)

MAX_PAGE = 500
#: After Redis comes back, how long reads keep bypassing it while the projector deletes the
#: documents whose write-through failed during the outage (it does so within one poll, ~1 s).
RECOVERY_GRACE_SECONDS = 3.0


class ReadService:
    """Answers the queries; ``degraded`` is true while Redis is failing and reads go to PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, watch: OffsetWatch, *, cache: DocumentCache | None,
                 partitions: int, consistency_timeout: float) -> None:
        self.pool, self.watch, self.cache = pool, watch, cache
        self._gets = CachedGets(cache) if cache is not None else None
        self.partitions, self.timeout = partitions, consistency_timeout
        self.degraded = False
        self._suspect_until = 0.0

    async def wait_consistent(self, token: str | None) -> dict[int, int]:
        """Wait until the projection has passed ``token``; 503 ``consistency_timeout`` past the bound, 422 at once
        for a token that is not one or names a partition the events topic does not have."""
        if not token:
            return {}
        try:
            wanted = decode_token(token)
        except ValueError as exc:
            raise InvalidRequest(str(exc), code="invalid_consistency_token") from None
        unknown = sorted(p for p in wanted if not 0 <= p < self.partitions)
        if unknown:
            # No position of a partition that does not exist will ever be reached: waiting would only time out.
            raise InvalidRequest(f"consistency token {token[:64]!r} names partition {unknown[0]}, and the events "
                                 f"topic has partitions 0..{self.partitions - 1}", code="unknown_partition")
        started = time.perf_counter()
        reached = await self.watch.wait_for(wanted, self.timeout)
        metrics.CONSISTENCY_WAIT.observe(time.perf_counter() - started)
        if not reached:
            metrics.CONSISTENCY_TIMEOUTS.inc()
            raise ServiceUnavailable(
                f"the read models have not reached {token} within {self.timeout}s; retry",
                code="consistency_timeout", headers={"Retry-After": "1"},
            )
        return wanted

    async def project(self, project_id: str, token: str | None) -> bytes:
        wanted = await self.wait_consistent(token)
        cached = await self._cached("project", project_id, wanted)
        if cached is not None:
            return cached
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(f"SELECT {PROJECT_VIEW_COLUMNS} FROM projects WHERE id = $1", project_id)
            if row is None:
                raise NotFound(f"project {project_id!r} does not exist", code="project_not_found")
            shots = await conn.fetch("SELECT * FROM shots WHERE project_id = $1 ORDER BY shot_id", project_id)
        doc = msgspec.json.encode(project_view(row, shots))
        await self._fill("project", project_id, row["version"], row["partition"], row["last_offset"], doc)
        return doc

    async def warm(self, limit: int) -> int:
        """Put the ``limit`` most recently changed projects in the cache (the hot set); how many went in.

        Note: called at start, before the first request: a restarted process answers its first reads
        from Redis instead of sending them all to PostgreSQL at once. Each document goes through the
        same version guard as a write-through, so warming never puts an older document over a newer one.
        """
        if self.cache is None or limit <= 0:
            return 0
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(f"SELECT {PROJECT_VIEW_COLUMNS} FROM projects ORDER BY updated_at DESC LIMIT $1",
                                    limit)
            shots: dict[str, list[Any]] = {}
            for shot in await conn.fetch("SELECT * FROM shots WHERE project_id = ANY($1::text[])",
                                         [r["id"] for r in rows]):
                shots.setdefault(shot["project_id"], []).append(shot)
        docs = [CachedDoc("project", r["id"], r["version"], r["partition"], r["last_offset"],
                          msgspec.json.encode(project_view(r, shots.get(r["id"], [])))) for r in rows]
        try:
            for start in range(0, len(docs), 500):
                await self.cache.put_many(docs[start:start + 500])
        except CacheUnavailable as exc:
            self._degrade(exc)
            return 0
        return len(docs)

    async def project_part(self, project_id: str, part: str, token: str | None) -> bytes:
        """One part of a project (``budget``, ``spec`` or ``dna``), straight from PostgreSQL."""
        await self.wait_consistent(token)
        row = await self.pool.fetchrow(f"SELECT {PROJECT_VIEW_COLUMNS} FROM projects WHERE id = $1", project_id)
        if row is None:
            raise NotFound(f"project {project_id!r} does not exist", code="project_not_found")
        view = {"budget": budget_view, "spec": spec_view, "dna": dna_view}[part](row)
        return msgspec.json.encode(view)

    async def shots_by_id(self, project_id: str, ids: list[str], token: str | None
                          ) -> tuple[list[dict[str, Any]], list[str]]:
        """The shot documents of ``ids`` in the order asked, and the ids that do not exist (one query)."""
        await self.wait_consistent(token)
        async with self.pool.acquire() as conn:
            rows = await conn.fetch("SELECT * FROM shots WHERE project_id = $1 AND shot_id = ANY($2::text[])",
                                    project_id, ids)
            if not rows:
                await require_project(conn, project_id)
        found = {r["shot_id"]: r for r in rows}
        return [shot_document(found[i]) for i in ids if i in found], [i for i in ids if i not in found]

    async def lease(self, name: str, token: str | None) -> bytes:
        """A lease, ``held`` judged by the database's clock at the time of the read (never cached: it ages)."""
        await self.wait_consistent(token)
        row = await self.pool.fetchrow(
            "SELECT *, (holder IS NOT NULL AND expires_at > now()) AS held FROM leases WHERE name = $1", name)
        if row is None:
            raise NotFound(f"lease {name!r} has never been granted", code="lease_not_found")
        return msgspec.json.encode(lease_view(row))

    async def task(self, task_id: str, token: str | None) -> bytes:
        wanted = await self.wait_consistent(token)
        cached = await self._cached("task", task_id, wanted)
        if cached is not None:
            return cached
        row = await self.pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
        if row is None:
            raise NotFound(f"task {task_id!r} does not exist", code="task_not_found")
        doc = msgspec.json.encode(task_view(row))
        await self._fill("task", task_id, row["version"], row["partition"], row["last_offset"], doc)
        return doc

    async def tasks(self, *, sort: str | None, filters: dict[str, str], page_size: int, cursor: str | None,
                    fields: str | None, token: str | None, tenant: str) -> Page:
        """``tenant``'s tasks sorted, filtered, keyset-paged and trimmed to ``fields`` as ``query_api/lists.py`` reads
        them."""
        from blackboard.query_api import lists

        query = lists.parse_list_query(lists.TASKS, sort=sort, filters=filters, page_size=page_size, cursor=cursor,
                                       fields=fields)
        await self.wait_consistent(token)
        rows, next_cursor = await lists.fetch_page(self.pool, lists.TASKS, query, tenant=tenant)
        views: list[TaskView] = [task_view(r) for r in rows]
        if query.fields is None:
            return Page(items=views, next_cursor=next_cursor)
        items = [lists.select_fields(msgspec.to_builtins(v), query.fields) for v in views]
        return Page(items=items, next_cursor=next_cursor)

    async def history(self, stream: str, after_version: int, limit: int, token: str | None) -> Page:
        """The audit trail of ``stream`` in version order after ``after_version``, with what each event changed.

        Note: the changes come from folding the stream with its decider from version 1 (the page's
        predecessors too): the cost grows with the stream's length (see ``history``).
        """
        await self.wait_consistent(token)
        rows = await h.load_page(self.pool, stream, after_version, limit + 1)
        category = h.category_of(stream)
        if h.decider_of(category) is not None and rows and after_version > 0:
            rows = [*await h.load_rows(self.pool, stream, version=after_version), *rows]
        entries = h.entries_with_changes(category, rows, after=after_version)
        more = len(entries) > limit
        items: list[HistoryEntry] = entries[:limit]
        return Page(items=items, next_cursor=str(items[-1].version) if more else None)

    async def state_at(self, stream: str, version: int | None, at: datetime | None, token: str | None) -> StreamState:
        """The state of ``stream`` after ``version`` or at time ``at`` (the latest without either)."""
        h.one_bound(version, at)
        category = h.category_of(stream)
        if h.decider_of(category) is None:
            raise InvalidRequest(f"streams of category {category!r} have no state to show", code="unknown_category")
        await self.wait_consistent(token)
        rows = await h.load_rows(self.pool, stream, version=version, at=at)
        if not rows or (version is not None and rows[-1]["stream_version"] < version):
            await h.missing_version(self.pool, stream, version, at)
        reached = h.fold_at(category, rows, version=version, at=at)
        return StreamState(stream, reached.version, reached.occurred_at, msgspec.to_builtins(reached.state))

    async def _cached(self, kind: str, ident: str, wanted: dict[int, int]) -> bytes | None:
        if self._gets is None:
            return None
        try:
            doc = await self._gets.get(kind, ident)
        except CacheUnavailable as exc:
            metrics.CACHE.labels("error").inc()
            self._degrade(exc)
            return None
        if self.degraded:
            log.info("cache.recovered")
            self.degraded = False
            self._suspect_until = time.monotonic() + RECOVERY_GRACE_SECONDS
        if time.monotonic() < self._suspect_until:
            metrics.CACHE.labels("bypass").inc()
            return None
        # A cached document is fresh enough only if it already holds the entity's events up to the
        # token's offset on its partition; otherwise PostgreSQL (which has passed the token) answers.
        # (The partition is hashed only for a read that carries a token: most do not.)
        if doc is None or (wanted and doc.offset < wanted.get(partition_for(ident, self.partitions), -1)):
            metrics.CACHE.labels("miss").inc()
            return None
        metrics.CACHE_HITS.inc()
        return doc.doc

    async def _fill(self, kind: str, ident: str, version: int, partition: int, offset: int, doc: bytes) -> None:
        if self.cache is None or self.degraded or time.monotonic() < self._suspect_until:
            return
        try:
            await self.cache.put_many([CachedDoc(kind, ident, version, partition, offset, doc)])
        except CacheUnavailable as exc:
            self._degrade(exc)

    def _degrade(self, exc: Exception) -> None:
        if not self.degraded:
            log.warning("cache.unavailable", error=repr(exc))
        self.degraded = True


async def require_project(conn: asyncpg.Connection, project_id: str) -> None:
    """404 ``project_not_found`` unless the project exists: an empty page of a missing project is an error."""
    if await conn.fetchval("SELECT 1 FROM projects WHERE id = $1", project_id) is None:
        raise NotFound(f"project {project_id!r} does not exist", code="project_not_found")


def stream_exists_check(stream: str) -> None:
    """Refuse a stream name that is not ``<category>:<id>`` with a precise error."""
    try:
        stream_partition_key(stream)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_stream") from None
    problem = unstorable_text(stream)
    if problem:
        raise InvalidRequest(f"stream {stream!r}: {problem}", code="invalid_stream")
    if SEPARATOR in stream:
        # The form of a stored id (schemas/tenancy.py): no caller may name one, so no tenant can reach another's.
        raise InvalidRequest(f"stream {stream[:64]!r}: an id may not hold {SEPARATOR!r}", code="invalid_stream")
