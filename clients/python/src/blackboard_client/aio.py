"""``AsyncClient``: the asyncio client, with the same surface as ``Client`` (``await`` its methods)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any

import httpx
import msgspec
import stamina

from blackboard_client import _core as core
from blackboard_client import _routes as r
from blackboard_client._async_reads import AsyncReads
from blackboard_client._runs import AsyncRuns
from blackboard_client.client import OnRejected
from blackboard_client.errors import ApiError, Rejected, Unreachable
from blackboard_client.lease import AsyncLease
from blackboard_client.models import Accepted, Claim, DryRun, Spooled, SpoolRejection
from blackboard_client.spool import Spool, SpoolEntry, by_stream

log = logging.getLogger("blackboard_client")


class AsyncClient(AsyncReads, AsyncRuns):
    """An asyncio client of one Blackboard server; see ``Client`` for the arguments.

    ``http`` may be an ``httpx.AsyncClient`` of the caller's (e.g. over an ASGI transport); it is not
    closed by ``aclose``. The spool's disk writes run in a thread, so the loop never waits on an fsync.
    """

    def __init__(self, base_url: str = "", *, api_key: str | None = None,
                 spool: str | os.PathLike[str] | Spool | None = None, timeout: float = 10.0, deadline: float = 30.0,
                 session_consistency: bool = True, on_rejected: OnRejected | None = None,
                 flush_interval: float = 1.0, flush_concurrency: int = 1,
                 http: httpx.AsyncClient | None = None) -> None:
        # The spool first: a spool held by another client fails before any connection is opened.
        self.spool = spool if isinstance(spool, Spool) or spool is None else Spool(spool)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)
        self.deadline = deadline
        self.session = core.Session() if session_consistency else None
        self.on_rejected = on_rejected
        self.flush_interval, self.flush_concurrency = flush_interval, flush_concurrency
        #: Until then, a command goes straight behind those spooled: the server was just found unreachable.
        self._offline_until = 0.0
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Stop the background delivery and close the connections and the spool (what it holds stays)."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._own_http:
            await self.http.aclose()
        if self.spool is not None:
            self.spool.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    # ── transport ──
    async def _request(self, call: r.Call, headers: Mapping[str, str] | None = None, *,
                       give_up_on_connect: bool = False) -> httpx.Response:
        hook = core.backoff_hook(give_up_on_connect=give_up_on_connect, deadline_at=time.monotonic() + self.deadline)
        try:
            async for attempt in stamina.retry_context(on=hook, attempts=None, timeout=self.deadline,
                                                       wait_initial=core.WAIT_INITIAL, wait_max=core.WAIT_MAX,
                                                       wait_jitter=core.WAIT_JITTER):
                with attempt:
                    response = await self.http.request(call.method, call.path, params=call.params, json=call.json,
                                                       content=call.content,
                                                       headers={**call.headers, **(headers or {})})
                    return core.check_status(response)
        except core.RetryableStatus as exc:
            raise core.api_error(exc.response.status_code, exc.response.content) from None
        except httpx.TransportError as exc:
            raise Unreachable(f"{self.http.base_url} did not answer: {exc!r}") from exc
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def _call(self, call: r.Call, consistent_with: str | None = None) -> Any:
        headers = core.read_headers(self.session, consistent_with) if call.read else {}
        response = await self._request(call, headers)
        if response.status_code in call.none_on:
            return None
        if response.status_code >= 400:
            raise core.api_error(response.status_code, response.content)
        if call.raw:
            return response
        return msgspec.json.decode(response.content) if response.content else None

    async def _pages(self, pager: r.Pager, consistent_with: str | None = None) -> AsyncIterator[Any]:
        token = consistent_with or (self.session.token() if self.session is not None else None)
        cursor: str | None = None
        while True:
            page = await self._call(pager.page(cursor), token)
            for item in page["items"]:
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # ── commands ──
    async def send(self, type: str, stream: str, payload: core.Payload, *, command_id: str | None = None,
                   expected_version: int | None = None, dry_run: bool = False, correlation_id: str | None = None,
                   causation_id: str | None = None, spool: bool = True) -> Accepted | DryRun | Spooled:
        """See ``Client.send``."""
        command_id = command_id or core.new_command_id()
        body = core.command_body(type, stream, payload, command_id=command_id, expected_version=expected_version,
                                 dry_run=dry_run, extra={"correlation_id": correlation_id,
                                                         "causation_id": causation_id})
        if self.spool is None or dry_run or not spool:
            return await self._deliver(body, command_id)
        if await asyncio.to_thread(self.spool.count) and (time.monotonic() < self._offline_until
                                                          or not await self.flush()):
            return await self._to_spool(command_id, type, stream, body)
        try:
            return await self._deliver(body, command_id, give_up_on_connect=True)
        except Unreachable:
            return await self._to_spool(command_id, type, stream, body)
        except ApiError as exc:
            if exc.status != 503:
                raise
            return await self._to_spool(command_id, type, stream, body)

    async def _deliver(self, body: bytes, command_id: str, *, give_up_on_connect: bool = False
                       ) -> Accepted | DryRun:
        call = r.Call("POST", "/v1/commands", content=body, headers={"Content-Type": core.JSON}, read=False)
        response = await self._request(call, give_up_on_connect=give_up_on_connect)
        result = core.outcome(response.status_code, response.content, command_id)
        if isinstance(result, Accepted) and self.session is not None:
            self.session.note(result.position)
        return result

    async def _to_spool(self, command_id: str, type_: str, stream: str, body: bytes) -> Spooled:
        assert self.spool is not None
        spooled = await asyncio.to_thread(self.spool.put, command_id, type_, stream, body)
        self._offline_until = time.monotonic() + core.OFFLINE_RECHECK
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_in_background(), name="blackboard-spool")
        return spooled

    # ── checkpoints ──
    async def save_checkpoint(self, thread_id: str, data: bytes, *, label: str | None = None,
                        parent_seq: int | None = None, metadata: dict[str, Any] | None = None,
                        command_id: str | None = None) -> dict[str, Any]:
        """Save ``data`` as the thread's next checkpoint (compressed, stored inline or as a blob by the server);
        the answer names its ``seq``, ``sha256`` and ``position``. Retries keep the same ``command_id``."""
        command_id = command_id or core.new_command_id()
        call = r.save_checkpoint(thread_id, data, label, parent_seq, metadata, command_id)
        return core.checkpoint_outcome(await self._request(call), command_id, self.session)

    async def restore_checkpoint(self, thread_id: str, seq: int, *, label: str | None = None,
                           command_id: str | None = None) -> dict[str, Any]:
        """Append a new checkpoint equal to checkpoint ``seq``; it becomes the latest."""
        command_id = command_id or core.new_command_id()
        call = r.restore_checkpoint(thread_id, seq, label, command_id)
        return core.checkpoint_outcome(await self._request(call), command_id, self.session)

    # ── the spool ──
    async def flush(self) -> bool:
        """See ``Client.flush``."""
        if self.spool is None:
            return True
        async with self._flush_lock:
            while batch := await asyncio.to_thread(self.spool.head, 256):
                if not await self._flush_batch(batch):
                    return False
            return True

    async def _flush_batch(self, batch: list[SpoolEntry]) -> bool:
        if self.flush_concurrency <= 1:
            return await self._flush_stream(batch, asyncio.Semaphore(1))
        room = asyncio.Semaphore(self.flush_concurrency)
        return all(await asyncio.gather(*(self._flush_stream(group, room) for group in by_stream(batch))))

    async def _flush_stream(self, entries: list[SpoolEntry], room: asyncio.Semaphore) -> bool:
        async with room:
            for entry in entries:
                if not await self._flush_one(entry):
                    return False
            return True

    async def _flush_one(self, entry: SpoolEntry) -> bool:
        assert self.spool is not None
        try:
            await self._deliver(entry.body, entry.command_id, give_up_on_connect=True)
        except Unreachable:
            return False
        except Rejected as exc:
            await self._refused(entry, 409, exc.code, exc.message, exc.details)
        except ApiError as exc:
            if exc.retryable:
                return False
            if core.refuses_the_client(exc):
                raise  # every command would fail alike: they stay, in order, for a client with a valid key
            await self._refused(entry, exc.status, exc.code, exc.message, {"errors": exc.errors})
        else:
            await asyncio.to_thread(self.spool.delivered, entry.seq)
        return True

    async def _refused(self, entry: SpoolEntry, status: int, code: str, message: str,
                       details: dict[str, Any]) -> None:
        assert self.spool is not None
        await asyncio.to_thread(self.spool.refused, entry, status, code, message, details)
        log.warning("spooled command %s refused on delivery: %s %s", entry.command_id, code, message)
        if self.on_rejected is not None:
            payload = msgspec.json.decode(entry.body).get("payload", {})
            self.on_rejected(SpoolRejection(entry.command_id, entry.stream, entry.type, status, code, message,
                                            details, payload))

    async def spooled(self) -> list[Spooled]:
        return await asyncio.to_thread(self.spool.entries) if self.spool is not None else []

    async def rejected(self) -> list[SpoolRejection]:
        return await asyncio.to_thread(self.spool.rejected) if self.spool is not None else []

    async def _flush_in_background(self) -> None:
        assert self.spool is not None
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                if await asyncio.to_thread(self.spool.count) == 0 or await self.flush():
                    return
            except Exception:
                log.exception("background delivery of the spool failed")

    # ── cluster and leases ──
    async def claim(self, node_id: str, *, skills: list[str] | None = None, lease_seconds: int | None = None,
                    consistent_with: str | None = None) -> Claim | None:
        """See ``Client.claim``."""
        body = {k: v for k, v in {"skills": skills, "lease_seconds": lease_seconds}.items() if v is not None}
        call = r.Call("POST", f"/v1/nodes/{r.seg(node_id)}/claim", r._params(consistent_with=consistent_with),
                      json=body, read=False, raw=True)
        response = await self._call(call)
        return None if response.status_code == 204 else msgspec.json.decode(response.content, type=Claim)

    async def heartbeat(self, node_id: str, *, status: str = "idle", load: int = 0) -> dict[str, Any]:
        call = r.Call("POST", f"/v1/nodes/{r.seg(node_id)}/heartbeat", json={"status": status, "load": load},
                      read=False)
        return await self._call(call)  # type: ignore[no-any-return]

    def lease(self, name: str, holder: str, ttl: int = 30) -> AsyncLease:
        """``async with client.lease(name, holder, ttl=30) as lease:``; see ``Client.lease``."""
        return AsyncLease(self, name, holder, ttl)

    # ── push ──
    async def watch(self, stream: str, *, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """See ``Client.watch``."""
        reconnect = core.Reconnect()
        while True:
            try:
                async for version, entry in self._changes(stream, after):
                    after = version
                    reconnect.reset()
                    yield entry
            except (httpx.TransportError, core.RetryableStatus) as exc:
                log.info("change stream of %s interrupted (%r); resuming after %d", stream, exc, after)
            await reconnect.asleep()

    async def _changes(self, stream: str, after: int) -> AsyncIterator[tuple[int, Any]]:
        call = r.changes(stream, after)
        timeout = httpx.Timeout(self.http.timeout.connect, read=None)
        headers = core.read_headers(self.session, None)
        async with self.http.stream("GET", call.path, params=call.params, headers=headers,
                                    timeout=timeout) as response:
            if response.status_code != 200:
                core.check_status(response)
                await response.aread()
                raise core.api_error(response.status_code, response.content)
            parser = core.SseParser()
            async for line in response.aiter_lines():
                for found in core.entries(parser, iter((line,))):
                    yield found
