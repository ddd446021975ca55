"""Partition ownership in a group: which member of a group owns which partitions of a topic, on both engines.

Several processes (the deciders) split the partitions of one topic among themselves. A member is
told through two callbacks: ``on_assigned(ps)`` when partitions ``ps`` become its own, and
``on_revoked(ps)`` when it must let them go, before another member can get them (as far as the
mechanism can tell: a member that is paused or cut off does not know it lost its partitions, and
the fencing in the log stops its writes). A member that dies or stops answering loses its
partitions after the session timeout; a member that joins or leaves causes a rebalance.

* Kafka: the broker's consumer-group protocol (an aiokafka consumer that never delivers records).
* PostgreSQL: leases in two tables of the log's schema, renewed by each member on the database clock.

Callbacks run one at a time, in order, in a task of their own: the task that keeps the session
alive (aiokafka's heartbeat, the PostgreSQL renewer) never waits on them, so a callback may take
seconds (a partition's restore) without the member losing its session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from blackboard.events.kafka import KafkaLog, stop_consumer
from blackboard.events.log import LogUnavailable
from blackboard.events.postgres import PostgresLog

log = structlog.get_logger(__name__)

Callback = Callable[[frozenset[int]], Awaitable[None]]

#: aiokafka leaves the group when ``getmany`` is not called for ``max_poll_interval_ms``; a membership
#: never calls it (it delivers no records), so the interval is as long as the protocol allows.
_NEVER_POLLED_MS = 2**31 - 1
#: How long a Kafka member may take to revoke before the broker drops it from a rebalance.
_MIN_REBALANCE_TIMEOUT = 60.0


class Membership(Protocol):
    """One member of a group sharing the partitions of one topic."""

    member_id: str

    async def start(self, on_assigned: Callback, on_revoked: Callback) -> None:
        """Join the group; returns once joined (may be before any partition is assigned).

        ``on_assigned(ps)`` is awaited when partitions ``ps`` become this member's; ``on_revoked(ps)``
        is awaited BEFORE ``ps`` can be given to another member (as far as the mechanism allows).
        Callbacks are never called concurrently; an exception they raise is logged and ignored.
        """

    def owned(self) -> frozenset[int]:
        """The partitions this member holds: from just before their ``on_assigned`` is called until
        just before their ``on_revoked`` is called."""

    async def close(self) -> None:
        """Revoke everything (awaiting ``on_revoked``) and leave the group promptly, so others take
        over without waiting for a timeout."""


def fair_share(live: Iterable[str], member: str, partitions: int) -> frozenset[int]:
    """The partitions ``member`` should own when ``live`` are the group's members: partition ``p``
    goes to ``sorted(live)[p % len(live)]``. Empty when ``member`` is not live."""
    ranked = sorted(set(live))
    if member not in ranked:
        return frozenset()
    return frozenset(p for p in range(partitions) if ranked[p % len(ranked)] == member)


class _Callbacks:
    """Runs one member's callbacks one at a time, in the order they were asked for, in a task of its own.

    It also keeps ``owned``: a partition joins it just before its ``on_assigned`` and leaves it just
    before its ``on_revoked``; a revocation of partitions not owned is dropped.
    """

    def __init__(self, member_id: str, group: str, on_assigned: Callback, on_revoked: Callback) -> None:
        self.member_id, self.group = member_id, group
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        self.owned: frozenset[int] = frozenset()
        self._jobs: asyncio.Queue[tuple[str, frozenset[int] | None, asyncio.Future[None]]] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name=f"membership-callbacks-{member_id}")

    def assign(self, partitions: frozenset[int]) -> asyncio.Future[None]:
        return self._ask("assign", partitions)

    def revoke(self, partitions: frozenset[int] | None = None) -> asyncio.Future[None]:
        """Revoke ``partitions`` (every owned one when ``None``); the future is done once ``on_revoked`` returned."""
        return self._ask("revoke", partitions)

    def _ask(self, kind: str, partitions: frozenset[int] | None) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((kind, partitions, done))
        return done

    async def close(self) -> None:
        """Run what was asked for, then stop."""
        await self._ask("stop", None)
        await self._task

    async def _run(self) -> None:
        while True:
            kind, partitions, done = await self._jobs.get()
            try:
                if kind == "stop":
                    return
                if kind == "assign" and partitions:
                    self.owned |= partitions
                    await self._call("on_assigned", self._on_assigned, partitions)
                elif kind == "revoke":
                    lost = self.owned if partitions is None else self.owned & partitions
                    if lost:
                        self.owned -= lost
                        await self._call("on_revoked", self._on_revoked, lost)
            finally:
                if not done.done():
                    done.set_result(None)

    async def _call(self, name: str, callback: Callback, partitions: frozenset[int]) -> None:
        try:
            await callback(partitions)
        except Exception:
            log.exception("membership.callback_failed", callback=name, group=self.group, member=self.member_id,
                          partitions=sorted(partitions))


# --- Kafka ------------------------------------------------------------------------------------------------------


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type information
    """Forwards aiokafka's rebalance calls to a ``KafkaMembership``."""

    def __init__(self, membership: KafkaMembership) -> None:
        self.membership = membership

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.membership._revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.membership._assigned(assigned)


class KafkaMembership:
    """``Membership`` through the broker's consumer-group protocol (an aiokafka consumer subscribed to the topic).

    The consumer pauses every partition it is given and is never polled, so it never fetches or
    delivers a record: members read the topic with an ordinary ``LogReader``.

    Note: Kafka's (eager) rebalance protocol takes every partition back from every member at each
    rebalance, before anyone gets new ones; ``on_revoked`` is therefore called with all owned
    partitions at each rebalance, and ``on_assigned`` may hand some of them straight back. A member
    that stops answering learns it lost its partitions only when it next reaches the broker.
    """

    def __init__(self, log: KafkaLog, group: str, topic: str, *, member_id: str, session_timeout: float = 10.0) -> None:
        self.log, self.group, self.topic, self.member_id = log, group, topic, member_id
        self.session_timeout = session_timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._callbacks: _Callbacks | None = None
        self._joined = asyncio.Event()
        self._closing = False

    async def start(self, on_assigned: Callback, on_revoked: Callback) -> None:
        session_ms = int(self.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.log.bootstrap_servers, client_id=self.member_id, group_id=self.group,
            enable_auto_commit=False, session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 10),
            # Frequent heartbeats: the other members learn of a rebalance through them. A member keeps
            # heartbeating while it revokes; the broker waits rebalance_timeout for it to rejoin.
            rebalance_timeout_ms=int(max(self.session_timeout, _MIN_REBALANCE_TIMEOUT) * 1000),
            max_poll_interval_ms=_NEVER_POLLED_MS, **self.log.security)
        try:
            await consumer.start()
        except KafkaError as exc:
            await stop_consumer(consumer)
            raise LogUnavailable(f"Kafka at {self.log.bootstrap_servers} unreachable: {exc!r}") from exc
        except asyncio.CancelledError:
            await stop_consumer(consumer)  # a start cut short may hold connections
            raise
        self._consumer = consumer
        self._callbacks = _Callbacks(self.member_id, self.group, on_assigned, on_revoked)
        consumer.subscribe([self.topic], listener=_Listener(self))
        try:
            await asyncio.wait_for(self._joined.wait(), max(10.0, 2 * self.session_timeout))
        except TimeoutError:
            log.warning("membership.join_slow", group=self.group, member=self.member_id, topic=self.topic)

    def owned(self) -> frozenset[int]:
        return self._callbacks.owned if self._callbacks is not None else frozenset()

    async def _revoked(self) -> None:
        # Awaited inside aiokafka's rebalance, before this member rejoins: nobody gets the partitions sooner.
        if self._callbacks is not None:
            await self._callbacks.revoke()

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        # Called before aiokafka restarts its heartbeat: the callback itself must run elsewhere.
        if self._consumer is not None:
            self._consumer.pause(*assigned)
        self._joined.set()
        partitions = frozenset(tp.partition for tp in assigned if tp.topic == self.topic)
        if self._callbacks is not None and partitions and not self._closing:
            self._callbacks.assign(partitions)

    async def close(self) -> None:
        if self._consumer is None or self._callbacks is None:
            return
        self._closing = True
        # aiokafka does not revoke on stop(); the group still counts these as ours until we leave below.
        await self._callbacks.revoke()
        consumer, self._consumer = self._consumer, None
        with contextlib.suppress(KafkaError):
            await stop_consumer(consumer)  # sends LeaveGroup: the others rebalance at once
        await self._callbacks.close()
        self._callbacks = None


# --- PostgreSQL -------------------------------------------------------------------------------------------------

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

# Created on first use (``IF NOT EXISTS``) beside the log's tables, under an advisory lock.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS group_members (
    grp     text        NOT NULL,
    member  text        NOT NULL,
    seen_at timestamptz NOT NULL,
    PRIMARY KEY (grp, member)
);
-- One row per owned partition; a row whose expires_at has passed may be taken by anyone.
CREATE TABLE IF NOT EXISTS partition_leases (
    grp        text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL CHECK (partition >= 0),
    member     text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (grp, topic, partition)
);
"""

_SEEN = """
INSERT INTO group_members (grp, member, seen_at) VALUES ($1, $2, now())
ON CONFLICT (grp, member) DO UPDATE SET seen_at = now()
"""

# Members gone for ten sessions are forgotten; a paused one records itself again when it wakes.
_LIVE = """
WITH gone AS (
    DELETE FROM group_members WHERE grp = $1 AND seen_at < now() - make_interval(secs => $2::float8 * 10)
)
SELECT member FROM group_members WHERE grp = $1 AND seen_at > now() - make_interval(secs => $2::float8)
"""

# Only a lease that has not expired is renewed: once expired it may already be another member's.
_RENEW = """
UPDATE partition_leases SET expires_at = now() + make_interval(secs => $4::float8)
WHERE grp = $1 AND topic = $2 AND member = $3 AND partition = ANY($5::int[]) AND expires_at > now()
RETURNING partition
"""

# A free partition has no row (it was released) or an expired one (its member stopped renewing).
_TAKE = """
INSERT INTO partition_leases (grp, topic, partition, member, expires_at)
SELECT $1, $2, p, $3, now() + make_interval(secs => $4::float8) FROM unnest($5::int[]) AS p
ON CONFLICT (grp, topic, partition) DO UPDATE SET member = excluded.member, expires_at = excluded.expires_at
WHERE partition_leases.expires_at <= now()
RETURNING partition
"""

_RELEASE = "DELETE FROM partition_leases WHERE grp = $1 AND topic = $2 AND member = $3 AND partition = ANY($4::int[])"

_LEAVE = "DELETE FROM group_members WHERE grp = $1 AND member = $2"


class PostgresMembership:
    """``Membership`` through leases in the PostgreSQL log's schema (tables ``group_members``, ``partition_leases``).

    Every ``session_timeout / 3`` (and at once when another member joins or releases, through
    NOTIFY) a member, in one transaction on the database clock: records itself as seen, renews the
    leases it holds, computes the live members (seen within ``session_timeout``) and its
    ``fair_share``, takes the free or expired partitions of its share and starts releasing those
    outside it (``on_revoked`` first; the lease row is deleted on the next round). It works on a
    connection of its own, so a busy pool never delays a renewal.

    Note: a lease that could not be renewed for ``session_timeout`` (measured on the local clock
    from before the last successful renewal was sent, so earlier than the database's expiry) is
    revoked locally at once. Member ids must be unique among running members.
    """

    def __init__(self, log: PostgresLog, group: str, topic: str, *, member_id: str,
                 session_timeout: float = 10.0) -> None:
        self.log, self.group, self.topic, self.member_id = log, group, topic, member_id
        self.session_timeout = session_timeout
        self.channel = f"{log.schema}_membership"
        self.partitions = 0
        self._conn: asyncpg.Connection | None = None
        self._callbacks: _Callbacks | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._held: dict[int, float] = {}  # partition -> local deadline of its lease
        self._releasing: set[int] = set()  # held, on_revoked asked for
        self._released: set[int] = set()  # held, on_revoked done: the row is deleted next round
        self._announce = True  # tell the others on the next round (joined, released)
        self._closing = False

    async def start(self, on_assigned: Callback, on_revoked: Callback) -> None:
        self.partitions = await self.log.partition_count(self.topic)
        try:
            conn = await self._connection()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{self.log.schema}.membership")
                await conn.execute(_SCHEMA)
        except _DB_ERRORS as exc:
            await self._disconnect()
            raise LogUnavailable(f"PostgreSQL log unreachable: {exc!r}") from exc
        self._callbacks = _Callbacks(self.member_id, self.group, on_assigned, on_revoked)
        try:
            await asyncio.wait_for(self._round(), self.session_timeout / 2)
        except _DB_ERRORS as exc:
            await self._callbacks.close()
            await self._disconnect()
            raise LogUnavailable(f"PostgreSQL log unreachable: {exc!r}") from exc
        self._task = asyncio.create_task(self._run(), name=f"membership-{self.group}-{self.member_id}")

    def owned(self) -> frozenset[int]:
        return self._callbacks.owned if self._callbacks is not None else frozenset()

    async def close(self) -> None:
        """Release every partition through the ordinary rounds (so leases are renewed while
        ``on_revoked`` runs), then leave the group and tell the others."""
        if self._task is None or self._callbacks is None:
            return
        self._closing = True
        self._wake.set()
        await self._task
        await self._callbacks.close()
        self._task = self._callbacks = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._closing and not self._held):
            self._wake.clear()
            try:
                # The server bounds each statement; this bounds a connection that stopped answering.
                await asyncio.wait_for(self._round(), self.session_timeout / 2)
            except _DB_ERRORS as exc:
                log.warning("membership.round_failed", group=self.group, member=self.member_id, error=repr(exc))
                await self._disconnect()
            except Exception:  # a bug must not stop the renewals of the others, nor the local expiry below
                log.exception("membership.round_failed", group=self.group, member=self.member_id)
                await self._disconnect()
            self._expire(loop.time())
            if self._closing and not self._held:
                break
            await self._sleep(loop.time())
        await self._leave()

    async def _sleep(self, now: float) -> None:
        wait = min([self.session_timeout / 3, *(d - now for d in self._held.values())])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, wait))

    async def _round(self) -> None:
        conn = await self._connection()
        sent_at = asyncio.get_running_loop().time()
        async with conn.transaction():
            await conn.execute(_SEEN, self.group, self.member_id)
            released = sorted(self._released)
            if released:
                await conn.execute(_RELEASE, self.group, self.topic, self.member_id, released)
            kept = sorted(set(self._held) - self._released)
            renewed = await self._partitions(conn, _RENEW, kept) if kept else frozenset()
            live = [r["member"] for r in await conn.fetch(_LIVE, self.group, self.session_timeout)]
            share = frozenset() if self._closing else fair_share(live, self.member_id, self.partitions)
            taken = await self._partitions(conn, _TAKE, sorted(share - set(self._held))) if share else frozenset()
            if self._announce or released:
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, self.group)
        self._announce = False
        self._settle(released, frozenset(kept), renewed, taken, sent_at)
        self._release(frozenset(self._held) - share - self._releasing)

    async def _partitions(self, conn: asyncpg.Connection, sql: str, partitions: Sequence[int]) -> frozenset[int]:
        rows = await conn.fetch(sql, self.group, self.topic, self.member_id, self.session_timeout, list(partitions))
        return frozenset(int(r["partition"]) for r in rows)

    def _settle(self, released: Sequence[int], kept: frozenset[int], renewed: frozenset[int],
                taken: frozenset[int], sent_at: float) -> None:
        """Bring the local view in line with a committed round."""
        for p in released:
            self._forget(p)
        self._lose(kept - renewed, "lease_lost")
        deadline = sent_at + self.session_timeout
        for p in renewed | taken:
            self._held[p] = deadline
        if taken and self._callbacks is not None:
            self._callbacks.assign(taken)

    def _release(self, partitions: frozenset[int]) -> None:
        if not partitions or self._callbacks is None:
            return
        self._releasing |= partitions
        self._callbacks.revoke(partitions).add_done_callback(lambda _: self._revoked(partitions))

    def _revoked(self, partitions: frozenset[int]) -> None:
        # A partition lost while its on_revoked ran is no longer ours to delete.
        self._released |= partitions & self._releasing
        self._wake.set()

    def _expire(self, now: float) -> None:
        self._lose(frozenset(p for p, deadline in self._held.items() if deadline <= now), "lease_expired")

    def _lose(self, partitions: frozenset[int], why: Literal["lease_lost", "lease_expired"]) -> None:
        """Partitions whose lease is no longer ours (or may not be): revoked locally at once."""
        if not partitions:
            return
        log.warning(f"membership.{why}", group=self.group, member=self.member_id, partitions=sorted(partitions))
        for p in partitions:
            self._forget(p)
        if self._callbacks is not None:
            self._callbacks.revoke(partitions)

    def _forget(self, partition: int) -> None:
        self._held.pop(partition, None)
        self._releasing.discard(partition)
        self._released.discard(partition)

    async def _leave(self) -> None:
        with contextlib.suppress(*_DB_ERRORS):
            conn = await self._connection()
            async with conn.transaction():
                await conn.execute(_LEAVE, self.group, self.member_id)
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, self.group)
        await self._disconnect(graceful=True)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await asyncpg.connect(self.log.dsn, timeout=self.session_timeout,
                                         server_settings=self._settings())
            await conn.add_listener(self.channel, self._on_notify)
            self._conn = conn
        return self._conn

    def _settings(self) -> dict[str, str]:
        """Session settings that bound every round by a third of a session.

        A member frozen inside a round (SIGSTOP, a stalled VM) keeps its transaction open with its
        rows locked: the server ends that transaction after ``idle_in_transaction_session_timeout``,
        and the others' statements give up (to try again next round) after ``lock_timeout``.
        """
        bound = str(max(100, int(self.session_timeout * 1000 / 3)))
        return {"search_path": self.log.schema, "idle_in_transaction_session_timeout": bound,
                "lock_timeout": bound, "statement_timeout": bound}

    def _on_notify(self, *args: Any) -> None:
        if str(args[-1]) == self.group:
            self._wake.set()

    async def _disconnect(self, *, graceful: bool = False) -> None:
        """Drop the connection: closed politely when leaving, cut after a failure (it may be mid-query)."""
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        if not graceful:
            conn.terminate()
            return
        try:
            await asyncio.wait_for(conn.close(), 2.0)
        except _DB_ERRORS:
            conn.terminate()
