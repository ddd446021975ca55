"""The partitioned-log interface every engine implements, and its errors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import msgspec

if TYPE_CHECKING:
    from blackboard.events.membership import Membership

Headers = tuple[tuple[str, bytes], ...]


class Record(msgspec.Struct, frozen=True):
    """A record to append. ``timestamp_ms`` ``None`` lets the engine stamp it."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp_ms: int | None = None


class StoredRecord(msgspec.Struct, frozen=True):
    """A record as read back, with its position."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int


class TopicDescription(msgspec.Struct, frozen=True):
    """What an engine can tell about a topic besides its offsets.

    ``config`` is the topic's configuration as the engine stores it (``None`` when the engine
    cannot tell); ``partition_bytes`` is the stored size of each partition (``None`` likewise);
    ``replicas`` the fewest replicas any partition has (``None``: the engine keeps no replicas of its own).
    """

    topic: str
    partitions: int
    config: dict[str, str] | None
    partition_bytes: dict[int, int] | None
    replicas: int | None = None


#: What a record takes in a Kafka batch beyond its key, value and headers, at most (record format v2: its
#: length, attributes, timestamp and offset deltas, key and value lengths and header count, as varints).
RECORD_OVERHEAD = 40
#: And each of its headers: the key and value lengths.
HEADER_OVERHEAD = 10
#: A batch's own header.
BATCH_OVERHEAD = 61


def record_bytes(r: Record) -> int:
    """The record's key, value and headers."""
    return len(r.key or b"") + len(r.value or b"") + sum(len(k) + len(v) for k, v in r.headers)


def batched_bytes(records: Sequence[Record]) -> int:
    """What ``records`` add to a record batch, at most: their bytes and the format's framing of each."""
    return sum(record_bytes(r) + RECORD_OVERHEAD + HEADER_OVERHEAD * len(r.headers) for r in records)


def fitting(sizes: Sequence[int], budget: int) -> int:
    """How many of the leading ``sizes`` (``batched_bytes`` of each part) fit one batch of ``budget`` bytes;
    at least one, since a part is never cut."""
    total = BATCH_OVERHEAD
    for i, size in enumerate(sizes):
        total += size
        if total > budget:
            return max(i, 1)
    return len(sizes)


def split_to_fit(records: Sequence[Record], budget: int | None) -> list[Sequence[Record]]:
    """``records`` cut, in order, into batches of at most ``budget`` bytes (``None``: no limit, one batch)."""
    if budget is None:
        return [records]
    parts: list[Sequence[Record]] = []
    rest = records
    while rest:
        n = fitting([batched_bytes([r]) for r in rest], budget)
        parts.append(rest[:n])
        rest = rest[n:]
    return parts


def check_record_sizes(records: Sequence[Record], limit: int) -> None:
    """Refuse the whole batch with ``RecordTooLarge`` when any record (key + value + headers) is over ``limit``.

    Note: engines check before sending, because not every broker enforces its own limit (tansu does not).
    """
    for i, r in enumerate(records):
        size = record_bytes(r)
        if size > limit:
            raise RecordTooLarge(f"record #{i} is {size} bytes, over the limit of {limit}")


class LogError(Exception):
    """Base of the log's errors. ``retriable`` says whether trying again can help."""

    retriable: bool = False


class LogUnavailable(LogError):
    """The engine could not be reached or timed out; the append may or may not have happened."""

    retriable = True


class UnknownTopic(LogError):
    """The topic does not exist."""


class TopicMismatch(LogError):
    """The topic exists with another partition count than the one asked for."""


class RecordTooLarge(LogError):
    """A record (or batch) is over the engine's size limit; nothing was appended."""


class OffsetConflict(LogError):
    """The partition's end was not where the writer expected: another writer appended.

    Note: on the PostgreSQL engine nothing was appended. The Kafka engine cannot append
    conditionally; it detects the conflict after the fact (``appended`` is then ``True``).
    """

    def __init__(self, topic: str, partition: int, expected: int, actual: int, *, appended: bool) -> None:
        super().__init__(
            f"{topic}[{partition}]: expected to append at offset {expected}, the log was at {actual}"
        )
        self.topic, self.partition, self.expected, self.actual = topic, partition, expected, actual
        self.appended = appended


class LogReader(Protocol):
    """Reads assigned partitions of one topic forward from chosen offsets."""

    async def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` on (adding it to the assignment if new)."""

    async def read(self, *, max_records: int = 1000, timeout: float = 1.0) -> list[StoredRecord]:
        """The next records of the assigned partitions, each partition's in offset order.

        Waits up to ``timeout`` seconds for at least one; returns ``[]`` if none came.
        """

    async def close(self) -> None: ...


class PartitionedLog(Protocol):
    """An append-only log of topics split into partitions, addressed by (partition, offset).

    Offsets are dense per partition (0, 1, 2, …) and a reader sees them in commit order:
    it never skips one that commits later.
    """

    engine: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create_topic(
        self, topic: str, partitions: int, *, config: Mapping[str, str] | None = None
    ) -> None:
        """Create ``topic``; a no-op when it exists with ``partitions``, else ``TopicMismatch``."""

    async def partition_count(self, topic: str) -> int:
        """Partitions of ``topic``; ``UnknownTopic`` when it does not exist."""

    async def describe_topic(self, topic: str) -> TopicDescription:
        """Configuration and per-partition sizes of ``topic``, as far as the engine can tell.

        ``UnknownTopic`` when it does not exist.
        """

    async def append(
        self, topic: str, partition: int, records: Sequence[Record], *, expected_offset: int | None = None
    ) -> int:
        """Append ``records`` to one partition as one batch, all or none; return the first offset.

        With ``expected_offset``, the batch must start there, or ``OffsetConflict``.
        """

    async def end_offset(self, topic: str, partition: int) -> int:
        """The offset the next appended record will get (the exact high-water mark)."""

    def reader(self, topic: str) -> LogReader:
        """A new reader of ``topic`` with no partition assigned yet."""

    def membership(self, group: str, topic: str, *, member_id: str, session_timeout: float = 10.0) -> Membership:
        """A member (not yet started) of ``group``, which splits the partitions of ``topic`` among its members.

        A member that stops renewing its session loses its partitions after ``session_timeout``
        seconds; ``member_id`` must be unique among the group's running members.
        """


async def read_at(log: PartitionedLog, topic: str, positions: Sequence[tuple[int, int]], *,
                  timeout: float = 10.0) -> dict[tuple[int, int], StoredRecord]:
    """The records at ``positions`` ((partition, offset) pairs) of ``topic``, read with one reader.

    A position at or past its partition's end is not in the answer; ``LogUnavailable`` when
    the records do not come within ``timeout`` seconds.
    """
    found: dict[tuple[int, int], StoredRecord] = {}
    by_partition: dict[int, list[int]] = {}
    for partition, offset in sorted(set(positions)):
        by_partition.setdefault(partition, []).append(offset)
    loop = asyncio.get_running_loop()
    for partition, offsets in by_partition.items():
        end = await log.end_offset(topic, partition)
        # One reader per partition: a reader also returns the other partitions assigned to it.
        reader = log.reader(topic)
        try:
            for offset in (o for o in offsets if o < end):
                await reader.seek(partition, offset)
                deadline = loop.time() + timeout
                while (partition, offset) not in found:
                    if loop.time() > deadline:
                        raise LogUnavailable(f"{topic}[{partition}] offset {offset} did not come within {timeout}s")
                    for rec in await reader.read(max_records=1, timeout=1.0):
                        if rec.offset == offset:
                            found[(partition, offset)] = rec
        finally:
            await reader.close()
    return found
