"""Waiting for the projection to pass a consistency token.

The projector notifies a PostgreSQL channel inside each batch's transaction (delivered on
commit); this watcher listens, re-reads ``projection_offsets`` and wakes the waiting reads.
It also polls, so a lost notification or a dropped listener costs latency, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.25


class OffsetWatch:
    """Knows how far the projection has applied each partition of the events topic."""

    def __init__(self, pool: asyncpg.Pool, *, topic: str, projection: str = "main",
                 channel: str = "blackboard_projection") -> None:
        self.pool, self.topic, self.projection, self.channel = pool, topic, projection, channel
        self.positions: dict[int, int] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: Any = None
        self._refreshing: asyncio.Future[None] | None = None
        self._again = False

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="offset-watch")

    async def stop(self) -> None:
        running = [t for t in (self._task, self._refreshing) if t is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def refresh(self) -> None:
        rows = await self.pool.fetch(
            "SELECT partition, next_offset FROM projection_offsets WHERE projection = $1 AND topic = $2",
            self.projection, self.topic,
        )
        self.positions = {r["partition"]: r["next_offset"] for r in rows}
        self._changed.set()
        self._changed = asyncio.Event()

    def satisfied(self, wanted: dict[int, int]) -> bool:
        """Whether every named offset has been applied (``next_offset`` past it)."""
        return all(self.positions.get(p, 0) > o for p, o in wanted.items())

    async def wait_for(self, wanted: dict[int, int], timeout: float) -> bool:
        """Wait until ``wanted`` is satisfied; ``False`` when ``timeout`` ran out first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.satisfied(wanted):
            left = deadline - loop.time()
            if left <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(left, POLL_SECONDS))
            if not changed.is_set():
                await self.refresh()
        return True

    # ── push subscribers (query_api/push.py) ──────────────────────────────────────────
    async def wait_changed(self, seen: dict[int, int], timeout: float) -> bool:
        """Wait until the applied positions differ from ``seen`` (a copy of ``positions`` taken
        before the caller last read); ``False`` when ``timeout`` ran out first.

        Note: comparing with a copy, not waiting for the next notification, means a batch that
        committed between the caller's read and this call wakes it at once instead of being missed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.positions == seen:
            left = deadline - loop.time()
            if left <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
        return True
    # ── end push subscribers ──────────────────────────────────────────────────────────

    async def _run(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as conn:
                    await conn.add_listener(self.channel, self._on_notify)
                    try:
                        while True:
                            await asyncio.sleep(POLL_SECONDS * 4)
                            await self.refresh()
                    finally:
                        await conn.remove_listener(self.channel, self._on_notify)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL went away: readers fall back to polling in wait_for
                log.warning("offset_watch.listener_lost", error=repr(exc))
                await asyncio.sleep(1.0)

    def _on_notify(self, *_: object) -> None:
        # One refresh at a time: notifications that come while one runs are answered by one more after
        # it, which reads every batch committed meanwhile (a query per projector batch cost the read
        # path and PostgreSQL more than the reads themselves under a steady write load).
        self._again = True
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh_while_notified())
            self._refreshing.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _refresh_while_notified(self) -> None:
        while self._again:
            self._again = False
            with contextlib.suppress(Exception):
                await self.refresh()
