"""A worker of the agent cluster: register, heartbeat, claim, run, report.

The loop a worker needs, written once: it registers its node, heartbeats at a quarter of its TTL
(so the node never goes offline while the process lives), claims the next task it can do, starts
it, runs ``handler`` with the task while reporting progress (each report extends the claim's
lease), and completes or fails it, always with the claim's fencing token. A refusal with
``lease_lost`` means the claim was taken away (the lease ran out, the node was declared
offline): the worker drops the task without reporting anything for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from blackboard_client.aio import AsyncClient
from blackboard_client.errors import ApiError, BlackboardError, LeaseLost, Rejected
from blackboard_client.models import Claim

log = logging.getLogger("blackboard_client.worker")


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """What a handler gets: the task and the token every report about it carries."""

    task_id: str
    token: int
    name: str
    type: str
    priority: int
    payload: dict[str, Any]
    attempts: int


#: Runs one task; its return value is the result (a JSON object) or ``None``. Raising fails the attempt.
Handler = Callable[[ClaimedTask, "Worker"], Awaitable[dict[str, Any] | None]]


@dataclass
class Worker:
    """Runs ``handler`` on the tasks ``node_id`` claims, ``capacity`` at a time.

    ``client`` may be an ``AsyncClient`` or an ``httpx.AsyncClient`` (used as its transport); without
    one the worker opens its own to ``base_url``.
    """

    base_url: str
    node_id: str
    handler: Handler
    skills: list[str] = field(default_factory=list)
    capacity: int = 1
    ttl_seconds: int = 30
    hostname: str = "localhost"
    platform: str = "python"
    api_key: str | None = None
    #: Seconds to wait when there is nothing to claim.
    idle_seconds: float = 0.2
    client: AsyncClient | httpx.AsyncClient | None = None
    #: ``(task_id, token)`` of every task this worker completed.
    completed: list[tuple[str, int]] = field(default_factory=list)
    _load: int = 0
    _bb: AsyncClient | None = None

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set (or forever), ``capacity`` tasks at a time."""
        stop = stop or asyncio.Event()
        own = self.client is None
        if isinstance(self.client, AsyncClient):
            self._bb = self.client
        else:
            self._bb = AsyncClient(self.base_url, api_key=self.api_key, http=self.client, timeout=30)
        try:
            await self.register()
            beat = asyncio.create_task(self._heartbeats(stop))
            try:
                await asyncio.gather(*(self._slot(stop) for _ in range(self.capacity)))
            finally:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
        finally:
            if own:
                await self._bb.aclose()

    @property
    def bb(self) -> AsyncClient:
        """The client the worker talks through (set by ``run``)."""
        assert self._bb is not None, "the worker is not running"
        return self._bb

    async def register(self) -> None:
        await self.bb.send("node.register", f"node:{self.node_id}", {
            "hostname": self.hostname, "platform": self.platform, "skills": self.skills, "capacity": self.capacity,
            "ttl_seconds": self.ttl_seconds}, spool=False)

    async def report(self, type_: str, task: ClaimedTask, payload: dict[str, Any]) -> None:
        """Send ``type_`` about ``task`` under its token; ``LeaseLost`` when the claim is gone."""
        try:
            await self.bb.send(type_, f"task:{task.task_id}", {"token": task.token, **payload}, spool=False)
        except Rejected as exc:
            if exc.code == "lease_lost":
                raise LeaseLost(exc.message) from None
            raise

    async def progress(self, task: ClaimedTask, percent: float | None = None, message: str | None = None) -> None:
        """Report progress (and extend the lease); raises ``LeaseLost`` when the claim is gone."""
        payload = {k: v for k, v in {"percent": percent, "message": message}.items() if v is not None}
        await self.report("task.progress", task, payload)

    async def claim(self) -> ClaimedTask | None:
        found: Claim | None = await self.bb.claim(self.node_id)
        if found is None:
            return None
        return ClaimedTask(found.task_id, found.token, found.name, found.type, found.priority, found.payload,
                           found.attempts)

    async def _slot(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            task = await self._next(stop)
            if task is None:
                await asyncio.sleep(self.idle_seconds)
                continue
            self._load += 1
            try:
                await self._run_one(task)
            except LeaseLost as exc:
                log.warning("lease of task %s (token %d) lost: %s", task.task_id, task.token, exc)
            except BlackboardError as exc:
                # The claim's lease ends by itself and the task goes back to pending: keep working.
                log.warning("task %s (token %d) abandoned: %r", task.task_id, task.token, exc)
                await asyncio.sleep(self.idle_seconds)
            finally:
                self._load -= 1

    async def _next(self, stop: asyncio.Event) -> ClaimedTask | None:
        """The next claimed task, or ``None`` (nothing to claim, or the claim failed: said in the log)."""
        try:
            return await self.claim()
        except ApiError as exc:
            log.warning("claim failed: %s", exc)
            if exc.status == 404:  # the registration did not land: register again
                await self.register()
        except BlackboardError as exc:
            log.warning("claim failed: %r", exc)
        return None

    async def _run_one(self, task: ClaimedTask) -> None:
        await self.report("task.start", task, {})
        try:
            result = await self.handler(task, self)
        except LeaseLost:
            raise
        except Exception as exc:
            await self.report("task.fail", task, {"error": repr(exc)[:1000]})
            return
        await self.report("task.complete", task, {"result": result} if result is not None else {})
        self.completed.append((task.task_id, task.token))

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.bb.heartbeat(self.node_id, status="busy" if self._load else "idle", load=self._load)
            except BlackboardError as exc:
                log.warning("heartbeat failed: %r", exc)
            await asyncio.sleep(self.ttl_seconds / 4)


async def sleeping_handler(task: ClaimedTask, worker: Worker) -> dict[str, Any]:
    """A demo handler: sleeps ``payload.seconds`` (default 0.1), reporting progress half way."""
    seconds = float(task.payload.get("seconds", 0.1))
    await asyncio.sleep(seconds / 2)
    await worker.progress(task, 50.0)
    await asyncio.sleep(seconds / 2)
    return {"slept": seconds, "node": worker.node_id}
