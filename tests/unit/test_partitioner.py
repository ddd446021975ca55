"""Kafka's default partitioner: the same partition as every Kafka client."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from blackboard.events.partitioner import murmur2, partition_for


@pytest.mark.parametrize(("key", "expected"), [
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@given(st.binary(max_size=64), st.integers(1, 512))
def test_partition_agrees_with_aiokafka(key: bytes, partitions: int) -> None:
    all_ = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key, all_, all_)
