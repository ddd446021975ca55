"""Group membership on PostgreSQL: leases in the log's schema (see ``blackboard.events.membership``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
import structlog

from blackboard.events.log import LogUnavailable
from blackboard.events.membership import Callback, Callbacks, fair_share

if TYPE_CHECKING:
    from blackboard.events.postgres.log import PostgresLog

log = structlog.get_logger(__name__)

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)

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
    """``Membership`` through leases in the PostgreSQL log's schema (tables ``group_members``, ``partition_leases``,
    made with the log's: ``sql/log/0003_membership.sql``).

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
        self._callbacks: Callbacks | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._held: dict[int, float] = {}  # partition -> local deadline of its lease
        self._releasing: set[int] = set()  # held, on_revoked asked for
        self._released: set[int] = set()  # held, on_revoked done: the row is deleted next round
        self._announce = True  # tell the others on the next round (joined, released)
        self._closing = False

    async def start(self, on_assigned: Callback, on_revoked: Callback) -> None:
        self.partitions = await self.log.partition_count(self.topic)
        self._callbacks = Callbacks(self.member_id, self.group, on_assigned, on_revoked)
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
