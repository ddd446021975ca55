"""The Kafka log engine (aiokafka): Redpanda or Kafka in production, tansu in the tests.

Note: tansu answers ListOffsets(latest) with the base offset of the last record batch + 1, which
under-counts whenever that batch held several records. ``end_offset`` therefore never trusts
``end_offsets()`` alone: it fetches from just before that answer and takes the high-water mark
the fetch response carries, which is exact on every broker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError

from blackboard.events.kafka.idempotence import Idempotence, start_producer
from blackboard.events.kafka.security import tls_failure
from blackboard.events.log import (
    LogUnavailable,
    OffsetConflict,
    Record,
    RecordTooLarge,
    StoredRecord,
    TopicDescription,
    TopicMismatch,
    UnknownTopic,
    check_record_sizes,
)

if TYPE_CHECKING:
    from blackboard.events.kafka.membership import KafkaMembership

UNKNOWN_TOPIC = 3
#: One group commit is one record batch; leave room for many records of the largest size.
MAX_BATCH_BYTES = 8 * 1_048_576
#: The producer's largest request, and so every topic's ``max.message.bytes``: a broker's default (about
#: 1 MiB) would refuse a group commit the producer is allowed to send.
MAX_MESSAGE_BYTES = MAX_BATCH_BYTES + 65536
#: The replication factor when none is set: three replicas, or as many as there are brokers.
DEFAULT_REPLICAS = 3


class KafkaLog:
    """``PartitionedLog`` on Kafka-protocol topics. ``acks="all"``; idempotent where the broker allows.

    Note: the producer is idempotent as ``idempotence`` asks (``events/kafka/idempotence.py``), never
    transactional. Without idempotence an ambiguous produce can leave a duplicate batch, which carries
    the same event ids and is skipped by every fold.
    """

    engine = "kafka"

    def __init__(self, bootstrap_servers: str, *, client_id: str = "blackboard",
                 max_record_bytes: int = 1_048_576, replication_factor: int | None = None,
                 min_insync_replicas: int | None = None, security: Mapping[str, Any] | None = None,
                 max_batch_bytes: int = MAX_BATCH_BYTES, idempotence: Idempotence = "auto") -> None:
        """``max_batch_bytes``: the largest batch one append sends, the group commit's budget; every topic
        created gets a ``max.message.bytes`` above it, so the broker never refuses a batch within it.
        ``idempotence``: the producer's, ``auto`` where the broker gives a producer id (``idempotent`` says)."""
        self.bootstrap_servers, self.client_id = bootstrap_servers, client_id
        self.max_batch_bytes = max_batch_bytes
        self.max_record_bytes, self.replication_factor = max_record_bytes, replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.security = dict(security or {})
        self.idempotence, self.idempotent = idempotence, False
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._probe_lock = asyncio.Lock()

    @property
    def max_message_bytes(self) -> int:
        """The producer's largest request and every created topic's ``max.message.bytes``: a batch and its framing."""
        return self.max_batch_bytes + MAX_MESSAGE_BYTES - MAX_BATCH_BYTES

    async def start(self) -> None:
        common = {"bootstrap_servers": self.bootstrap_servers, "client_id": self.client_id, **self.security}
        try:
            self._producer, self.idempotent = await start_producer(
                lambda idempotent: AIOKafkaProducer(
                    acks="all", linger_ms=0, max_batch_size=self.max_batch_bytes, enable_idempotence=idempotent,
                    max_request_size=self.max_message_bytes, **common),
                self.idempotence, where=self.bootstrap_servers)
            self._admin = AIOKafkaAdminClient(**common)
            await self._admin.start()
            self._probe = AIOKafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=50, **common)
            await self._probe.start()
        except (KafkaError, TimeoutError) as exc:
            await self.close()
            context = self.security.get("ssl_context")
            why = await tls_failure(self.bootstrap_servers, context) if context is not None else None
            raise LogUnavailable(f"Kafka at {self.bootstrap_servers} unreachable: {why or repr(exc)}") from exc
        except asyncio.CancelledError:
            await self.close()  # what had started holds connections
            raise

    async def close(self) -> None:
        """Close the producer, the admin client and the probe, all three even when cancelled meanwhile."""
        producer, admin, probe = self._producer, self._admin, self._probe
        self._producer = self._admin = self._probe = None
        cancelled: asyncio.CancelledError | None = None
        for closing in (probe and stop_consumer(probe), producer and producer.stop(), admin and admin.close()):
            if closing is None:
                continue
            try:
                await _close_quietly(closing)
            except asyncio.CancelledError as exc:  # the caller's: finish closing, then pass it on
                cancelled = exc
        if cancelled is not None:
            raise cancelled

    def _started(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._producer is None or self._admin is None or self._probe is None:
            raise LogUnavailable("the Kafka log is not started")
        return self._producer, self._admin, self._probe

    async def create_topic(self, topic: str, partitions: int, *, config: Mapping[str, str] | None = None) -> None:
        _, admin, _ = self._started()
        replicas, insync = await self.replication()
        configs = {"min.insync.replicas": str(insync), "max.message.bytes": str(self.max_message_bytes),
                   **(config or {})}
        new = NewTopic(topic, partitions, replicas, topic_configs=configs)
        try:
            response = await admin.create_topics([new])
            errors = [e for e in getattr(response, "topic_errors", []) if e[1] not in (0, 36)]
            if errors:
                raise LogUnavailable(f"creating {topic!r} failed: {errors}")
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:
            raise LogUnavailable(f"creating {topic!r} failed: {exc!r}") from exc
        existing = await self._wait_for_partitions(topic)
        if existing != partitions:
            raise TopicMismatch(f"topic {topic!r} has {existing} partitions, not {partitions}")

    async def replication(self) -> tuple[int, int]:
        """(replication factor, ``min.insync.replicas``) of the topics this log creates.

        Unset, the factor is ``DEFAULT_REPLICAS`` or the broker count if smaller (so one broker works),
        and ``min.insync.replicas`` is 2 with three or more replicas, else 1: one broker can be lost
        without refusing writes, and an acknowledged batch is on two brokers.
        """
        replicas = self.replication_factor
        if replicas is None:
            _, admin, _ = self._started()
            try:
                brokers = len((await admin.describe_cluster())["brokers"])
            except KafkaError as exc:
                raise LogUnavailable(f"Kafka at {self.bootstrap_servers}: brokers unknown: {exc!r}") from exc
            replicas = max(1, min(DEFAULT_REPLICAS, brokers))
        insync = self.min_insync_replicas or max(1, min(2, replicas - 1))
        return replicas, insync

    async def _wait_for_partitions(self, topic: str) -> int:
        for _ in range(50):
            with contextlib.suppress(UnknownTopic):
                return await self.partition_count(topic)
            await asyncio.sleep(0.1)
        return await self.partition_count(topic)

    async def partition_count(self, topic: str) -> int:
        """Partitions of ``topic``."""
        return len((await self._described(topic))["partitions"])

    async def _described(self, topic: str) -> dict[str, Any]:
        """The admin client's description of ``topic`` (partitions, their replicas and ISR).

        Note: it lists topics before describing one, because a broker that auto-creates topics
        (tansu does, with 4 partitions) would create the topic merely by being asked about it.
        """
        _, admin, _ = self._started()
        try:
            if topic not in await admin.list_topics():
                raise UnknownTopic(f"topic {topic!r} does not exist")
            described = await admin.describe_topics([topic])
        except KafkaError as exc:
            raise LogUnavailable(f"describing {topic!r} failed: {exc!r}") from exc
        info: dict[str, Any] = described[0] if described else {}
        if info.get("error_code", UNKNOWN_TOPIC) == UNKNOWN_TOPIC or not info.get("partitions"):
            raise UnknownTopic(f"topic {topic!r} does not exist")
        return info

    async def describe_topic(self, topic: str) -> TopicDescription:
        """The topic's configuration (DescribeConfigs) and replication factor; sizes are ``None``.

        Note: partition sizes would need DescribeLogDirs, which aiokafka does not implement.
        """
        partitions = (await self._described(topic))["partitions"]
        replicas = min(len(p["replicas"]) for p in partitions)
        _, admin, _ = self._started()
        try:
            responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        except KafkaError:
            return TopicDescription(topic, len(partitions), None, None, replicas)
        return TopicDescription(topic, len(partitions), _topic_config(responses, topic), None, replicas)

    async def append(self, topic: str, partition: int, records: Sequence[Record], *,
                     expected_offset: int | None = None) -> int:
        producer, _, _ = self._started()
        if not records:
            raise ValueError("append needs at least one record")
        check_record_sizes(records, self.max_record_bytes)
        batch = producer.create_batch()
        for r in records:
            if batch.append(key=r.key, value=r.value, timestamp=r.timestamp_ms, headers=list(r.headers)) is None:
                raise RecordTooLarge(f"a batch of {len(records)} records is over {self.max_batch_bytes} bytes")
        batch.close()
        try:
            sent = await producer.send_batch(batch, topic, partition=partition)
            base = int((await sent).offset)
        except MessageSizeTooLargeError as exc:
            raise RecordTooLarge(f"the broker refused the batch as too large: {exc!r}") from exc
        except KafkaError as exc:
            raise LogUnavailable(f"append to {topic}[{partition}] failed; it may or may not have happened: "
                                 f"{exc!r}") from exc
        if expected_offset is not None and base != expected_offset:
            raise OffsetConflict(topic, partition, expected_offset, base, appended=True)
        return base

    async def end_offset(self, topic: str, partition: int) -> int:
        _, _, probe = self._started()
        tp = TopicPartition(topic, partition)
        async with self._probe_lock:
            try:
                probe.assign([tp])
                listed = (await probe.end_offsets([tp]))[tp]
                if listed == 0:
                    return 0
                probe.seek(tp, listed - 1)
                for _ in range(100):
                    fetched = await probe.getmany(tp, timeout_ms=100, max_records=1)
                    highwater = probe.highwater(tp)
                    if fetched.get(tp) and highwater is not None:
                        return max(int(highwater), int(listed))
            except KafkaError as exc:
                raise LogUnavailable(f"end offset of {topic}[{partition}] unknown: {exc!r}") from exc
        raise LogUnavailable(f"end offset of {topic}[{partition}]: no fetch answered")

    def reader(self, topic: str) -> KafkaLogReader:
        return KafkaLogReader(self, topic)

    def membership(self, group: str, topic: str, *, member_id: str, session_timeout: float = 10.0) -> KafkaMembership:
        """A member of the consumer group ``group`` subscribed to ``topic`` (see ``KafkaMembership``)."""
        from blackboard.events.kafka.membership import KafkaMembership  # it imports this module

        return KafkaMembership(self, group, topic, member_id=member_id, session_timeout=session_timeout)


def _topic_config(responses: Sequence[Any], topic: str) -> dict[str, str] | None:
    """``{name: value}`` of ``topic`` from DescribeConfigs responses; ``None`` when the broker answered an error.

    Every response version starts a resource with (error_code, error_message, type, name, entries)
    and an entry with (name, value, …); sensitive values come back as null and are left out.
    """
    for response in responses:
        for error_code, _, _, name, entries in (tuple(r)[:5] for r in response.resources):
            if name == topic:
                if error_code:
                    return None
                return {str(e[0]): str(e[1]) for e in entries if e[1] is not None}
    return None


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop an aiokafka consumer and close every connection it holds.

    aiokafka's fetcher, while closing, awaits pending fetch tasks it has just cancelled, so their
    CancelledError can escape ``stop()`` before the consumer closes its client: the connections
    would then be dropped open. When the cancellation is not our own task's, the client is closed
    here instead; a cancellation of the calling task is passed on.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        # Either way the connections are closed first: a client dropped open is found by the garbage
        # collector later, anywhere, as an unclosed socket.
        await _close_quietly(consumer._client.close())
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def _close_quietly(closing: Awaitable[object]) -> None:
    """Await a close that must finish, even when the caller is being cancelled; its own failure is ignored."""
    with contextlib.suppress(Exception):
        await asyncio.shield(closing)


class KafkaLogReader:
    """A group-less consumer over chosen partitions, from chosen offsets."""

    def __init__(self, log: KafkaLog, topic: str) -> None:
        self.log, self.topic = log, topic
        self.positions: dict[int, int] = {}
        self._consumer: AIOKafkaConsumer | None = None

    async def _ensure(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.log.bootstrap_servers, client_id=self.log.client_id,
                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                max_partition_fetch_bytes=MAX_BATCH_BYTES, **self.log.security)
            try:
                await self._consumer.start()
            except KafkaError as exc:
                consumer, self._consumer = self._consumer, None
                await stop_consumer(consumer)  # a start that failed half-way may hold a connection
                raise LogUnavailable(f"Kafka at {self.log.bootstrap_servers} unreachable: {exc!r}") from exc
        return self._consumer

    async def seek(self, partition: int, offset: int) -> None:
        consumer = await self._ensure()
        self.positions[partition] = offset
        # assign() replaces the assignment and forgets positions: seek every partition again.
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(self.positions)])
        for p, o in self.positions.items():
            consumer.seek(TopicPartition(self.topic, p), o)

    async def read(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[StoredRecord]:
        if not self.positions:
            await asyncio.sleep(timeout)
            return []
        consumer = await self._ensure()
        try:
            batches = await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        except KafkaError as exc:
            raise LogUnavailable(f"reading {self.topic} failed: {exc!r}") from exc
        out: list[StoredRecord] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            for m in batches[tp]:
                out.append(StoredRecord(self.topic, tp.partition, m.offset, m.key, m.value,
                                        tuple((k, bytes(v)) for k, v in m.headers), int(m.timestamp)))
            if batches[tp]:
                self.positions[tp.partition] = batches[tp][-1].offset + 1
        return out

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            with contextlib.suppress(Exception):  # closing: nothing left to do about a failing connection
                await stop_consumer(consumer)
