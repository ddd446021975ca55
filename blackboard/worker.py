"""A worker of the agent cluster over the HTTP API: register, heartbeat, claim, run, report.

The loop a worker needs, written once: it registers its node, heartbeats at a quarter of its TTL
(so the node never goes offline while the process lives), claims the next task it can do, starts
it, runs ``handler`` with the task while reporting progress (each report extends the claim's
lease), and completes or fails it, always with the claim's fencing token. A refusal with
``lease_lost`` means the claim was taken away (the lease ran out, the node was declared
offline): the worker drops the task without reporting anything for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)


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


class LeaseLost(Exception):
    """The claim is no longer ours: stop working on the task and report nothing for it."""


@dataclass
class Worker:
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
    client: httpx.AsyncClient | None = None
    completed: list[tuple[str, int]] = field(default_factory=list)
    _load: int = 0

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Work until ``stop`` is set (or forever), ``capacity`` tasks at a time."""
        stop = stop or asyncio.Event()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        own = self.client is None
        client = self.client or httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)
        self.client = client
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
                await client.aclose()

    async def register(self) -> None:
        await self.command("node.register", f"node:{self.node_id}", {
            "hostname": self.hostname, "platform": self.platform, "skills": self.skills, "capacity": self.capacity,
            "ttl_seconds": self.ttl_seconds})

    async def command(self, type_: str, stream: str, payload: dict[str, Any]) -> httpx.Response:
        assert self.client is not None
        body = {"type": type_, "stream": stream, "payload": payload, "command_id": f"w-{uuid.uuid4().hex}"}
        for attempt in range(5):
            response = await self.client.post("/v1/commands", json=body)
            if response.status_code != 503:
                return response
            await asyncio.sleep(0.1 * 2 ** attempt)  # the same command_id: a retry is never a second command
        return response

    async def claim(self) -> ClaimedTask | None:
        assert self.client is not None
        response = await self.client.post(f"/v1/nodes/{self.node_id}/claim", json={})
        if response.status_code == 204:
            return None
        response.raise_for_status()
        c = response.json()
        return ClaimedTask(c["task_id"], c["token"], c["name"], c["type"], c["priority"], c["payload"], c["attempts"])

    async def progress(self, task: ClaimedTask, percent: float | None = None, message: str | None = None) -> None:
        """Report progress (and extend the lease); raises ``LeaseLost`` when the claim is gone."""
        payload: dict[str, Any] = {"token": task.token}
        if percent is not None:
            payload["percent"] = percent
        if message is not None:
            payload["message"] = message
        self._check(await self.command("task.progress", f"task:{task.task_id}", payload))

    def _check(self, response: httpx.Response) -> None:
        if response.status_code == 409 and response.json().get("code") == "lease_lost":
            raise LeaseLost(response.json().get("message", ""))
        response.raise_for_status()

    async def _slot(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                task = await self.claim()
            except httpx.HTTPStatusError as exc:
                log.warning("worker.claim_failed", status=exc.response.status_code, body=exc.response.text[:200])
                if exc.response.status_code == 404:  # the registration did not land: register again
                    await self.register()
                await asyncio.sleep(self.idle_seconds)
                continue
            except httpx.TransportError as exc:
                log.warning("worker.claim_failed", error=repr(exc))
                await asyncio.sleep(self.idle_seconds)
                continue
            if task is None:
                await asyncio.sleep(self.idle_seconds)
                continue
            self._load += 1
            try:
                await self._run_one(task)
            except LeaseLost as exc:
                log.warning("worker.lease_lost", task=task.task_id, token=task.token, reason=str(exc))
            except (httpx.HTTPError, ValueError) as exc:
                # The claim's lease ends by itself and the task goes back to pending: keep working.
                log.warning("worker.task_abandoned", task=task.task_id, token=task.token, error=repr(exc))
                await asyncio.sleep(self.idle_seconds)
            finally:
                self._load -= 1

    async def _run_one(self, task: ClaimedTask) -> None:
        stream = f"task:{task.task_id}"
        self._check(await self.command("task.start", stream, {"token": task.token}))
        try:
            result = await self.handler(task, self)
        except LeaseLost:
            raise
        except Exception as exc:
            self._check(await self.command("task.fail", stream, {"token": task.token, "error": repr(exc)[:1000]}))
            return
        payload: dict[str, Any] = {"token": task.token}
        if result is not None:
            payload["result"] = result
        self._check(await self.command("task.complete", stream, payload))
        self.completed.append((task.task_id, task.token))

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        assert self.client is not None
        while not stop.is_set():
            try:
                await self.client.post(f"/v1/nodes/{self.node_id}/heartbeat",
                                       json={"status": "busy" if self._load else "idle", "load": self._load})
            except httpx.TransportError as exc:
                log.warning("worker.heartbeat_failed", error=repr(exc))
            await asyncio.sleep(self.ttl_seconds / 4)


async def sleeping_handler(task: ClaimedTask, worker: Worker) -> dict[str, Any]:
    """A demo handler: sleeps ``payload.seconds`` (default 0.1), reporting progress half way."""
    seconds = float(task.payload.get("seconds", 0.1))
    await asyncio.sleep(seconds / 2)
    await worker.progress(task, 50.0)
    await asyncio.sleep(seconds / 2)
    return {"slept": seconds, "node": worker.node_id}
