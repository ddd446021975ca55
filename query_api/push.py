"""Push of a stream's changes as Server-Sent Events, resumable without loss or repetition.

Every event is one ``change_log`` entry (only what the read models committed is pushed), with
``id:`` its stream version and ``data:`` its history entry as JSON (changes and log position
included). A client resumes with ``Last-Event-ID`` (what ``EventSource`` sends on reconnect)
or ``?after=<version>``: entries come strictly after it, in version order, so a reconnect misses
none and repeats none.

A subscriber reads ``change_log`` past the last version it fed, then sleeps until the
projection's applied positions move (the projector's ``pg_notify`` through ``OffsetWatch``),
with a poll every ``POLL_SECONDS`` in case the watch is gone, and a keep-alive comment every
``KEEPALIVE_SECONDS`` so that proxies keep the connection open.

Note: the stream's versions arrive in order because one projector applies a partition's
events in log order, one transaction per batch; the changes of each entry need the state before
it, so a subscription folds the stream from version 1 once when it starts (then one event at a
time), and the entries up to the resume point are folded but not sent.

A subscription is its caller's tenant's: the route names the stream as stored (scoped to the tenant), and every
entry is sent in the tenant's own ids (``schemas/tenancy.unscope_json``; the middleware that does it for JSON
answers lets a stream pass). A stream that is not the tenant's is served as one that does not exist: an open
subscription that never sends an entry.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import structlog
from litestar import Litestar
from litestar.response import ServerSentEvent, ServerSentEventMessage

from blackboard.query_api.history import Replay, category_of, load_page
from blackboard.query_api.reads import ReadService
from blackboard.schemas.errors import ApiError, InvalidRequest, ServiceUnavailable
from blackboard.schemas.tenancy import is_tenants_stream, unscope_json

log = structlog.get_logger(__name__)

#: Open subscriptions one process serves at most (``Settings.max_subscribers`` overrides it when set).
MAX_SUBSCRIBERS = 1000
#: A comment line this often keeps idle connections open through proxies.
KEEPALIVE_SECONDS = 15.0
#: Longest sleep without reading ``change_log``, whatever the notifications say.
POLL_SECONDS = 5.0
#: Rows read per query while catching up.
BATCH = 500
#: The ``app.state`` key of the process's ``Subscriptions``.
STATE_KEY = "subscriptions"


class Subscriptions:
    """Counts open subscriptions and refuses one past ``limit`` (503 ``too_many_subscribers``)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0

    def acquire(self) -> Slot:
        if self.open >= self.limit:
            raise ServiceUnavailable(
                f"this server already has {self.open} open subscriptions, its limit; retry later or elsewhere",
                code="too_many_subscribers", headers={"Retry-After": "5"},
            )
        self.open += 1
        return Slot(self)


class Slot:
    """One open subscription; ``release`` may be called any number of times, it counts once."""

    def __init__(self, owner: Subscriptions) -> None:
        self._owner: Subscriptions | None = owner

    def release(self) -> None:
        if self._owner is not None:
            self._owner.open -= 1
            self._owner = None


def subscriptions_of(app: Litestar) -> Subscriptions:
    """The app's ``Subscriptions``, made on first use with the runtime's limit."""
    found: Subscriptions | None = app.state.get(STATE_KEY)
    if found is None:
        limit = getattr(app.state.runtime.settings, "max_subscribers", None) or MAX_SUBSCRIBERS
        found = app.state[STATE_KEY] = Subscriptions(int(limit))
    return found


def resume_point(last_event_id: str | None, after: int | None) -> int:
    """The version to send after: ``Last-Event-ID`` wins over ``after`` (a reconnecting ``EventSource``
    keeps its first URL and sends the header), and neither means from the start."""
    if last_event_id is None or last_event_id.strip() == "":
        return after or 0
    text = last_event_id.strip()
    if not text.isdigit() or len(text) > 16:
        raise InvalidRequest(f"Last-Event-ID {last_event_id[:40]!r} is not a stream version this API sent",
                             code="invalid_last_event_id")
    return int(text)


async def subscribe(app: Litestar, stream: str, after: int, *, tenant: str) -> ServerSentEvent:
    """The SSE response of stored ``stream``'s entries after version ``after``, as ``tenant`` (the caller's) names
    them; 503 past the subscriber limit."""
    slot = subscriptions_of(app).acquire()
    events = _events(app, stream, after, slot, tenant) if is_tenants_stream(tenant, stream) else _nothing(slot)
    # A generator that never starts (the client left before the first byte) never runs its
    # ``finally``: its collection frees the slot instead.
    weakref.finalize(events, slot.release)
    return ServerSentEvent(events)


async def _nothing(slot: Slot) -> AsyncIterator[ServerSentEventMessage]:
    """The subscription of a stream that is not the caller's: what one of a stream nobody writes sends."""
    try:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            yield ServerSentEventMessage(data=None, comment="keep-alive")
    finally:
        slot.release()


async def _events(app: Litestar, stream: str, after: int, slot: Slot,
                  tenant: str) -> AsyncIterator[ServerSentEventMessage]:
    replay = Replay(category_of(stream))
    if replay.decider is None:
        replay.version = after  # no state to rebuild: start at the resume point
    loop = asyncio.get_running_loop()
    keepalive_at = loop.time() + KEEPALIVE_SECONDS
    try:
        while True:
            reads: ReadService = app.state.runtime.reads  # swapped when a rebuilt generation goes live
            seen = dict(reads.watch.positions)
            rows = await _next_rows(reads, stream, replay.version)
            for row in rows:
                entry = replay.feed(row)
                if entry.version > after:
                    data = unscope_json(tenant, msgspec.json.encode(entry)).decode()
                    yield ServerSentEventMessage(data=data, id=entry.version)
                    keepalive_at = loop.time() + KEEPALIVE_SECONDS
            if len(rows) == BATCH:
                continue
            left = keepalive_at - loop.time()
            if left <= 0:
                yield ServerSentEventMessage(data=None, comment="keep-alive")
                keepalive_at = loop.time() + KEEPALIVE_SECONDS
                continue
            await reads.watch.wait_changed(seen, min(left, POLL_SECONDS))
    except ApiError as exc:  # an entry this build cannot decode: the status is sent, so end the stream
        log.warning("push.stopped", stream=stream, code=exc.code, error=exc.message)
    finally:
        slot.release()


async def _next_rows(reads: ReadService, stream: str, fed: int) -> list[Any]:
    """The rows after version ``fed``; none (and a short pause) while PostgreSQL cannot answer."""
    try:
        return await load_page(reads.pool, stream, fed, BATCH)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # A pool closing under a generation swap, or PostgreSQL away: the next turn takes the live one.
        log.warning("push.read_failed", stream=stream, error=repr(exc))
        await asyncio.sleep(0.5)
        return []
