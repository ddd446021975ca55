"""Partition ownership in a group, the interface: which member of a group owns which partitions of a topic.

Several processes (the deciders) split the partitions of one topic among themselves. A member is
told through two callbacks: ``on_assigned(ps)`` when partitions ``ps`` become its own, and
``on_revoked(ps)`` when it must let them go, before another member can get them (as far as the
mechanism can tell: a member that is paused or cut off does not know it lost its partitions, and
the fencing in the log stops its writes). A member that dies or stops answering loses its
partitions after the session timeout; a member that joins or leaves causes a rebalance.

* Kafka (``events/kafka/membership.py``): the broker's consumer-group protocol (an aiokafka consumer
  that never delivers records).
* PostgreSQL (``events/postgres/membership.py``): leases in two tables of the log's schema, renewed by
  each member on the database clock.

Callbacks run one at a time, in order, in a task of their own: the task that keeps the session
alive (aiokafka's heartbeat, the PostgreSQL renewer) never waits on them, so a callback may take
seconds (a partition's restore) without the member losing its session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

Callback = Callable[[frozenset[int]], Awaitable[None]]


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


class Callbacks:
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
