"""The read side: documents from Redis when fresh enough, else PostgreSQL, never failing on Redis."""

from __future__ import annotations

import base64
import time
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import structlog

from blackboard.events.partitioner import partition_for
from blackboard.projector.cache import CachedDoc, CacheUnavailable, DocumentCache
from blackboard.projector.documents import history_entry, project_view, task_view
from blackboard.query_api import metrics
from blackboard.query_api.consistency import OffsetWatch
from blackboard.schemas.api import InvalidRequest, NotFound, ServiceUnavailable
from blackboard.schemas.envelope import decode_token, stream_partition_key
from blackboard.schemas.views import HistoryEntry, Page, TaskView

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
        self.partitions, self.timeout = partitions, consistency_timeout
        self.degraded = False
        self._suspect_until = 0.0

    async def wait_consistent(self, token: str | None) -> dict[int, int]:
        """Wait until the projection has passed ``token``; 503 ``consistency_timeout`` past the bound."""
        if not token:
            return {}
        try:
            wanted = decode_token(token)
        except ValueError as exc:
            raise InvalidRequest(str(exc), code="invalid_consistency_token") from None
        started = time.perf_counter()
        reached = await self.watch.wait_for(wanted, self.timeout)
        metrics.CONSISTENCY_WAIT.observe(time.perf_counter() - started)
        if not reached:
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
            row = await conn.fetchrow("SELECT * FROM projects WHERE id = $1", project_id)
            if row is None:
                raise NotFound(f"project {project_id!r} does not exist", code="project_not_found")
            shots = await conn.fetch("SELECT * FROM shots WHERE project_id = $1 ORDER BY shot_id", project_id)
        doc = msgspec.json.encode(project_view(row, shots))
        await self._fill("project", project_id, row["version"], row["partition"], row["last_offset"], doc)
        return doc

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

    async def tasks(self, status: str | None, page_size: int, cursor: str | None, token: str | None) -> Page:
        """Tasks oldest first, keyset-paged on ``(created_at, id)`` so pages never shift under inserts."""
        await self.wait_consistent(token)
        after = _decode_cursor(cursor)
        rows = await self.pool.fetch(
            """SELECT * FROM tasks
               WHERE ($1::text IS NULL OR status = $1)
                 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
               ORDER BY created_at, id LIMIT $4""",
            status, after[0] if after else None, after[1] if after else "", page_size + 1,
        )
        items: list[TaskView] = [task_view(r) for r in rows[:page_size]]
        more = len(rows) > page_size
        return Page(items=items, next_cursor=_encode_cursor(rows[page_size - 1]) if more else None)

    async def history(self, stream: str, after_version: int, limit: int, token: str | None) -> Page:
        """The audit trail of ``stream`` in version order, after ``after_version``."""
        await self.wait_consistent(token)
        rows = await self.pool.fetch(
            """SELECT * FROM change_log WHERE stream = $1 AND stream_version > $2
               ORDER BY stream_version LIMIT $3""",
            stream, after_version, limit + 1,
        )
        items: list[HistoryEntry] = [history_entry(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items=items, next_cursor=str(items[-1].version) if more else None)

    async def _cached(self, kind: str, ident: str, wanted: dict[int, int]) -> bytes | None:
        if self.cache is None:
            return None
        try:
            doc = await self.cache.get(kind, ident)
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
        partition = partition_for(ident, self.partitions)
        if doc is None or (partition in wanted and doc.offset < wanted[partition]):
            metrics.CACHE.labels("miss").inc()
            return None
        metrics.CACHE.labels("hit").inc()
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


def _encode_cursor(row: Any) -> str:
    raw = msgspec.json.encode([row["created_at"].isoformat(), row["id"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = msgspec.json.decode(raw, type=tuple[str, str])
        return datetime.fromisoformat(created), ident
    except (ValueError, msgspec.DecodeError):
        raise InvalidRequest("cursor is not one this API returned", code="invalid_cursor") from None


def stream_exists_check(stream: str) -> None:
    """Refuse a stream name that is not ``<category>:<id>`` with a precise error."""
    try:
        stream_partition_key(stream)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_stream") from None
