"""``Client``: the synchronous client. Commands with retries and the offline spool, reads, watch, leases."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any

import httpx
import msgspec
import stamina

from blackboard_client import _core as core
from blackboard_client import _routes as r
from blackboard_client._runs import SyncRuns
from blackboard_client._sync_reads import SyncReads
from blackboard_client.errors import ApiError, Rejected, Unreachable
from blackboard_client.lease import Lease
from blackboard_client.models import Accepted, Claim, DryRun, Spooled, SpoolRejection
from blackboard_client.spool import Spool, SpoolEntry, by_stream

log = logging.getLogger("blackboard_client")

#: Called with each spooled command the server refused on delivery.
OnRejected = Callable[[SpoolRejection], None]


class Client(SyncReads, SyncRuns):
    """A synchronous client of one Blackboard server.

    ``timeout`` bounds one HTTP request; ``deadline`` bounds a call with all its retries. With ``spool``
    (a path or a ``Spool``), a command the server cannot take is stored on disk and ``send`` returns
    ``Spooled``; the spool is delivered by ``flush()``, and in the background every ``flush_interval``
    seconds while it holds anything. With ``flush_concurrency`` above 1, delivery sends that many streams
    at once: each stream's commands stay in order, but commands of different streams may be applied in
    another order than they were spooled (keep 1 when a command needs one of another stream first).
    """

    def __init__(self, base_url: str, *, api_key: str | None = None,
                 spool: str | os.PathLike[str] | Spool | None = None, timeout: float = 10.0, deadline: float = 30.0,
                 session_consistency: bool = True, on_rejected: OnRejected | None = None,
                 flush_interval: float = 1.0, flush_concurrency: int = 1, http: httpx.Client | None = None) -> None:
        # The spool first: a spool held by another client fails before any connection is opened.
        self.spool = spool if isinstance(spool, Spool) or spool is None else Spool(spool)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_http = http is None
        self.http = http or httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.deadline = deadline
        self.session = core.Session() if session_consistency else None
        self.on_rejected = on_rejected
        self._flush_lock = threading.Lock()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        self.flush_interval, self.flush_concurrency = flush_interval, flush_concurrency
        #: Until then, a command goes straight behind those spooled: the server was just found unreachable.
        self._offline_until = 0.0

    # ── lifecycle ──
    def close(self) -> None:
        """Stop the background delivery and close the connections and the spool (what it holds stays)."""
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join()
        if self._own_http:
            self.http.close()
        if self.spool is not None:
            self.spool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ── transport ──
    def _request(self, call: r.Call, headers: Mapping[str, str] | None = None, *,
                 give_up_on_connect: bool = False) -> httpx.Response:
        """One call with retries (backoff with jitter, ``Retry-After``) until ``deadline``.

        Raises ``Unreachable`` when no answer came, ``ApiError`` when the last answer was still retryable."""
        hook = core.backoff_hook(give_up_on_connect=give_up_on_connect, deadline_at=time.monotonic() + self.deadline)
        try:
            for attempt in stamina.retry_context(on=hook, attempts=None, timeout=self.deadline,
                                                 wait_initial=core.WAIT_INITIAL, wait_max=core.WAIT_MAX,
                                                 wait_jitter=core.WAIT_JITTER):
                with attempt:
                    response = self.http.request(call.method, call.path, params=call.params, json=call.json,
                                                 content=call.content, headers={**call.headers, **(headers or {})})
                    return core.check_status(response)
        except core.RetryableStatus as exc:
            raise core.api_error(exc.response.status_code, exc.response.content) from None
        except httpx.TransportError as exc:
            raise Unreachable(f"{self.http.base_url} did not answer: {exc!r}") from exc
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _call(self, call: r.Call, consistent_with: str | None = None) -> Any:
        headers = core.read_headers(self.session, consistent_with) if call.read else {}
        response = self._request(call, headers)
        if response.status_code in call.none_on:
            return None
        if response.status_code >= 400:
            raise core.api_error(response.status_code, response.content)
        if call.raw:
            return response
        return msgspec.json.decode(response.content) if response.content else None

    def _pages(self, pager: r.Pager, consistent_with: str | None = None) -> Iterator[Any]:
        # The token is taken once: every page waits for the same position.
        token = consistent_with or (self.session.token() if self.session is not None else None)
        cursor: str | None = None
        while True:
            page = self._call(pager.page(cursor), token)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    # ── commands ──
    def send(self, type: str, stream: str, payload: core.Payload, *, command_id: str | None = None,
             expected_version: int | None = None, dry_run: bool = False, correlation_id: str | None = None,
             causation_id: str | None = None, spool: bool = True) -> Accepted | DryRun | Spooled:
        """Send one command; ``Accepted`` (or ``DryRun``), ``Spooled`` when offline with a spool.

        Raises ``Rejected`` when a rule refuses it, ``ApiError`` for a request the server refuses (4xx),
        ``Unreachable`` (without a spool) when the server did not answer within the deadline, ``SpoolFull``.
        The ``command_id`` (made here when not given) is the same on every retry and in the spool: the
        command is applied at most once whatever happens to the connection. ``spool=False`` sends it now
        or raises, even with a spool (a lease, a claim's report: late is as good as never).
        """
        command_id = command_id or core.new_command_id()
        body = core.command_body(type, stream, payload, command_id=command_id, expected_version=expected_version,
                                 dry_run=dry_run, extra={"correlation_id": correlation_id,
                                                         "causation_id": causation_id})
        if self.spool is None or dry_run or not spool:
            return self._deliver(body, command_id)
        if self.spool.count() and (time.monotonic() < self._offline_until or not self.flush()):
            return self._to_spool(command_id, type, stream, body)  # behind those waiting: the order holds
        try:
            return self._deliver(body, command_id, give_up_on_connect=True)
        except Unreachable:
            return self._to_spool(command_id, type, stream, body)
        except ApiError as exc:
            if exc.status != 503:
                raise
            return self._to_spool(command_id, type, stream, body)

    def _deliver(self, body: bytes, command_id: str, *, give_up_on_connect: bool = False) -> Accepted | DryRun:
        call = r.Call("POST", "/v1/commands", content=body, headers={"Content-Type": core.JSON}, read=False)
        response = self._request(call, give_up_on_connect=give_up_on_connect)
        result = core.outcome(response.status_code, response.content, command_id)
        if isinstance(result, Accepted) and self.session is not None:
            self.session.note(result.position)
        return result

    def _to_spool(self, command_id: str, type_: str, stream: str, body: bytes) -> Spooled:
        assert self.spool is not None
        spooled = self.spool.put(command_id, type_, stream, body)
        self._offline_until = time.monotonic() + core.OFFLINE_RECHECK
        self._start_flusher()
        return spooled

    # ── checkpoints ──
    def save_checkpoint(self, thread_id: str, data: bytes, *, label: str | None = None,
                        parent_seq: int | None = None, metadata: dict[str, Any] | None = None,
                        command_id: str | None = None) -> dict[str, Any]:
        """Save ``data`` as the thread's next checkpoint (compressed, stored inline or as a blob by the server);
        the answer names its ``seq``, ``sha256`` and ``position``. Retries keep the same ``command_id``."""
        command_id = command_id or core.new_command_id()
        call = r.save_checkpoint(thread_id, data, label, parent_seq, metadata, command_id)
        return core.checkpoint_outcome(self._request(call), command_id, self.session)

    def restore_checkpoint(self, thread_id: str, seq: int, *, label: str | None = None,
                           command_id: str | None = None) -> dict[str, Any]:
        """Append a new checkpoint equal to checkpoint ``seq``; it becomes the latest."""
        command_id = command_id or core.new_command_id()
        call = r.restore_checkpoint(thread_id, seq, label, command_id)
        return core.checkpoint_outcome(self._request(call), command_id, self.session)

    # ── the spool ──
    def flush(self) -> bool:
        """Deliver the spool, oldest first, with the original command ids; ``True`` once it is empty,
        ``False`` when the server stopped answering (what is left stays, in order).

        A command the server refuses (a rule, or as invalid) leaves the spool for ``rejected()`` and is
        passed to ``on_rejected``; delivery goes on with the next. A refusal of the client itself (401,
        or 403 ``insufficient_scope``) is raised as ``ApiError`` and leaves every command in the spool.
        """
        if self.spool is None:
            return True
        with self._flush_lock:
            while batch := self.spool.head(256):
                if not self._flush_batch(batch):
                    return False
            return True

    def _flush_batch(self, batch: list[SpoolEntry]) -> bool:
        if self.flush_concurrency <= 1:
            return self._flush_stream(batch)
        with ThreadPoolExecutor(self.flush_concurrency, thread_name_prefix="blackboard-flush") as pool:
            return all(list(pool.map(self._flush_stream, by_stream(batch))))

    def _flush_stream(self, entries: list[SpoolEntry]) -> bool:
        """Deliver ``entries`` in order; ``False`` at the first the server did not take."""
        return all(self._flush_one(entry) for entry in entries)

    def _flush_one(self, entry: SpoolEntry) -> bool:
        assert self.spool is not None
        try:
            self._deliver(entry.body, entry.command_id, give_up_on_connect=True)
        except Unreachable:
            return False
        except Rejected as exc:
            self._refused(entry, 409, exc.code, exc.message, exc.details)
        except ApiError as exc:
            if exc.retryable:
                return False
            if core.refuses_the_client(exc):
                raise  # every command would fail alike: they stay, in order, for a client with a valid key
            self._refused(entry, exc.status, exc.code, exc.message, {"errors": exc.errors})
        else:
            self.spool.delivered(entry.seq)
        return True

    def _refused(self, entry: SpoolEntry, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        assert self.spool is not None
        self.spool.refused(entry, status, code, message, details)
        log.warning("spooled command %s refused on delivery: %s %s", entry.command_id, code, message)
        if self.on_rejected is not None:
            payload = msgspec.json.decode(entry.body).get("payload", {})
            self.on_rejected(SpoolRejection(entry.command_id, entry.stream, entry.type, status, code, message,
                                            details, payload))

    def spooled(self) -> list[Spooled]:
        """The commands waiting in the spool, oldest first."""
        return self.spool.entries() if self.spool is not None else []

    def rejected(self) -> list[SpoolRejection]:
        """Spooled commands the server refused on delivery."""
        return self.spool.rejected() if self.spool is not None else []

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(target=self._flush_in_background, name="blackboard-spool", daemon=True)
            self._flusher.start()

    def _flush_in_background(self) -> None:
        assert self.spool is not None
        while not self._closed.wait(self.flush_interval):
            try:
                if self.spool.count() == 0 or self.flush():
                    return
            except Exception:  # a background thread has no caller: say it, and try again later
                log.exception("background delivery of the spool failed")

    # ── cluster and leases ──
    def claim(self, node_id: str, *, skills: list[str] | None = None, lease_seconds: int | None = None,
              consistent_with: str | None = None) -> Claim | None:
        """Claim the next task ``node_id`` can do (``None`` when there is none)."""
        body = {k: v for k, v in {"skills": skills, "lease_seconds": lease_seconds}.items() if v is not None}
        call = r.Call("POST", f"/v1/nodes/{r.seg(node_id)}/claim", r._params(consistent_with=consistent_with),
                      json=body, read=False, raw=True)
        response = self._call(call)
        return None if response.status_code == 204 else msgspec.json.decode(response.content, type=Claim)

    def heartbeat(self, node_id: str, *, status: str = "idle", load: int = 0) -> dict[str, Any]:
        call = r.Call("POST", f"/v1/nodes/{r.seg(node_id)}/heartbeat", json={"status": status, "load": load},
                      read=False)
        return self._call(call)  # type: ignore[no-any-return]

    def lease(self, name: str, holder: str, ttl: int = 30) -> Lease:
        """``with client.lease("render-farm", "me", ttl=30) as lease:`` hold it, renewed in the background;
        ``lease.token`` is its fencing token. Raises ``Rejected`` (``lease_held``) when another holds it."""
        return Lease(self, name, holder, ttl)

    # ── push ──
    def watch(self, stream: str, *, after: int = 0) -> Iterator[dict[str, Any]]:
        """Each new history entry of ``stream`` after version ``after``, for ever; reconnects after a
        disconnect from the last version seen, so nothing is missed or repeated."""
        reconnect = core.Reconnect()
        while True:
            try:
                for version, entry in self._changes(stream, after):
                    after = version
                    reconnect.reset()
                    yield entry
            except (httpx.TransportError, core.RetryableStatus) as exc:
                log.info("change stream of %s interrupted (%r); resuming after %d", stream, exc, after)
            reconnect.sleep()

    def _changes(self, stream: str, after: int) -> Iterator[tuple[int, Any]]:
        call = r.changes(stream, after)
        timeout = httpx.Timeout(self.http.timeout.connect, read=None)
        headers = core.read_headers(self.session, None)
        with self.http.stream("GET", call.path, params=call.params, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                core.check_status(response)
                response.read()
                raise core.api_error(response.status_code, response.content)
            yield from core.entries(core.SseParser(), response.iter_lines())
