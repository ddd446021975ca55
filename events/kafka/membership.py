"""Group membership on Kafka: the broker's consumer-group protocol (see ``blackboard.events.membership``)."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from blackboard.events.kafka.log import KafkaLog, stop_consumer
from blackboard.events.log import LogUnavailable
from blackboard.events.membership import Callback, Callbacks

log = structlog.get_logger(__name__)

#: aiokafka leaves the group when ``getmany`` is not called for ``max_poll_interval_ms``; a membership
#: never calls it (it delivers no records), so the interval is as long as the protocol allows.
_NEVER_POLLED_MS = 2**31 - 1
#: How long a Kafka member may take to revoke before the broker drops it from a rebalance.
_MIN_REBALANCE_TIMEOUT = 60.0


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
        self._callbacks: Callbacks | None = None
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
        self._callbacks = Callbacks(self.member_id, self.group, on_assigned, on_revoked)
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
