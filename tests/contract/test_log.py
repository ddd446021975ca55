"""One contract, every engine: each test runs on the PostgreSQL log and on Kafka (tansu)."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from blackboard.events.log import (
    OffsetConflict,
    PartitionedLog,
    Record,
    RecordTooLarge,
    StoredRecord,
    TopicMismatch,
    UnknownTopic,
)


def topic() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def rec(i: int, key: bytes = b"k") -> Record:
    return Record(key=key, value=f"v{i}".encode(), headers=(("n", str(i).encode()), ("bin", b"\x00\xff")),
                  timestamp_ms=1_700_000_000_000 + i)


async def read_all(log: PartitionedLog, name: str, partition: int, count: int) -> list[StoredRecord]:
    reader = log.reader(name)
    try:
        await reader.seek(partition, 0)
        got: list[StoredRecord] = []
        for _ in range(50):
            got += await reader.read(max_records=1000, timeout=0.5)
            if len(got) >= count:
                break
        return got
    finally:
        await reader.close()


async def test_round_trip_of_key_value_headers_and_time(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 2)
    base = await log.append(name, 1, [rec(0), Record(key=None, value=None)])
    got = await read_all(log, name, 1, 2)
    assert base == 0
    assert [(r.partition, r.offset, r.key, r.value) for r in got] == [(1, 0, b"k", b"v0"), (1, 1, None, None)]
    assert got[0].headers == (("n", b"0"), ("bin", b"\x00\xff")) and got[0].timestamp_ms == 1_700_000_000_000


async def test_batches_get_dense_offsets_and_an_exact_end(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 1)
    assert await log.end_offset(name, 0) == 0
    bases = [await log.append(name, 0, [rec(i) for i in range(size)]) for size in (5, 1, 7, 3)]
    assert bases == [0, 5, 6, 13]
    # tansu's ListOffsets(latest) would answer 14 here (last batch base + 1); the contract says 16.
    assert await log.end_offset(name, 0) == 16
    assert [r.offset for r in await read_all(log, name, 0, 16)] == list(range(16))


async def test_a_reader_follows_several_partitions_each_in_order(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 3)
    for p in range(3):
        await log.append(name, p, [rec(i) for i in range(4)])
    reader = log.reader(name)
    try:
        await reader.seek(0, 0)
        await reader.seek(2, 1)
        got: list[StoredRecord] = []
        for _ in range(20):
            got += await reader.read(timeout=0.3)
            if len(got) >= 7:
                break
    finally:
        await reader.close()
    assert [(r.partition, r.offset) for r in got if r.partition == 0] == [(0, i) for i in range(4)]
    assert [(r.partition, r.offset) for r in got if r.partition == 2] == [(2, i) for i in range(1, 4)]
    assert not [r for r in got if r.partition == 1]


async def test_a_waiting_reader_is_woken_by_an_append(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 1)
    reader = log.reader(name)
    try:
        await reader.seek(0, 0)
        assert await reader.read(timeout=0.2) == []
        waiting = asyncio.create_task(reader.read(timeout=10))
        await asyncio.sleep(0.2)
        await log.append(name, 0, [rec(1)])
        got = await asyncio.wait_for(waiting, 10)
    finally:
        await reader.close()
    assert [r.value for r in got] == [b"v1"]


async def test_topics_are_created_once_with_one_partition_count(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 3, config={"retention.ms": "-1"})
    await log.create_topic(name, 3)
    assert await log.partition_count(name) == 3
    with pytest.raises(TopicMismatch):
        await log.create_topic(name, 4)
    with pytest.raises(UnknownTopic):
        await log.partition_count(topic())


async def test_an_append_that_expected_another_end_conflicts(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 1)
    await log.append(name, 0, [rec(0)], expected_offset=0)
    with pytest.raises(OffsetConflict) as conflict:
        await log.append(name, 0, [rec(1)], expected_offset=0)
    assert (conflict.value.expected, conflict.value.actual) == (0, 1)
    # The PostgreSQL log refuses before writing; Kafka cannot append conditionally and says so.
    assert conflict.value.appended == (log.engine == "kafka")
    assert await log.end_offset(name, 0) == (2 if log.engine == "kafka" else 1)


async def test_a_record_over_the_limit_is_refused_whole(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 1)
    with pytest.raises(RecordTooLarge):
        await log.append(name, 0, [rec(0), Record(key=b"k", value=b"x" * 2_000_000)])
    assert await log.end_offset(name, 0) == 0


async def test_concurrent_appenders_never_make_a_tailing_reader_skip(log: PartitionedLog) -> None:
    """Eight appenders on one partition while a reader tails it: every offset once, in order."""
    name = topic()
    await log.create_topic(name, 1)
    sizes = [[random.Random(w * 100 + i).randint(1, 5) for i in range(25)] for w in range(8)]
    total = sum(map(sum, sizes))

    async def appender(w: int) -> None:
        for i, size in enumerate(sizes[w]):
            await log.append(name, 0, [rec(w * 1000 + i * 10 + j, key=f"w{w}".encode()) for j in range(size)])

    reader = log.reader(name)
    seen: list[int] = []

    async def tail() -> None:
        await reader.seek(0, 0)
        while len(seen) < total:
            seen.extend(r.offset for r in await reader.read(max_records=500, timeout=1.0))

    try:
        tailing = asyncio.create_task(tail())
        await asyncio.gather(*(appender(w) for w in range(8)))
        await asyncio.wait_for(tailing, 30)
    finally:
        await reader.close()
    assert seen == list(range(total))
    assert await log.end_offset(name, 0) == total


async def test_describe_topic_tells_its_config_and_sizes_where_it_can(log: PartitionedLog) -> None:
    name = topic()
    await log.create_topic(name, 2, config={"retention.ms": "-1"})
    await log.append(name, 1, [rec(0), rec(1)])
    described = await log.describe_topic(name)
    assert (described.topic, described.partitions) == (name, 2)
    if described.config is not None:
        assert described.config.get("retention.ms") == "-1"
    if described.partition_bytes is not None:
        # key b"k" + value b"v0" + headers n/b"0" and bin/b"\x00\xff": 1 + 2 + 2 + 5 = 10 per record, plus
        # the few bytes of framing the stored form of the headers takes.
        assert described.partition_bytes[0] == 0 and 20 <= described.partition_bytes[1] <= 20 + 2 * 16
    assert (log.engine == "postgres") == (described.partition_bytes is not None), "the PostgreSQL log can count"
    with pytest.raises(UnknownTopic):
        await log.describe_topic(topic())
