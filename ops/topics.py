"""``blackboard topics``: partitions, end offsets, sizes and configuration of the topics the service uses."""

from __future__ import annotations

import msgspec

from blackboard.events.log import PartitionedLog, UnknownTopic
from blackboard.ops.offsets import end_offsets
from blackboard.ops.settings import OpsSettings


class PartitionEnd(msgspec.Struct, frozen=True):
    """``size_bytes`` is ``None`` where the engine cannot tell (the Kafka log)."""

    partition: int
    end_offset: int
    size_bytes: int | None = None


class TopicReport(msgspec.Struct, frozen=True):
    """One topic: ``exists`` is false (and ``partitions`` empty) when it was never created.

    ``config`` is the topic's configuration as the engine stores it, ``None`` where it cannot tell;
    ``size_bytes`` the sum of the partitions' sizes, ``None`` where they are unknown.
    """

    name: str
    exists: bool
    partitions: list[PartitionEnd]
    total: int
    size_bytes: int | None = None
    config: dict[str, str] | None = None


class TopicsReport(msgspec.Struct, frozen=True):
    engine: str
    topics: list[TopicReport]
    total: int


async def topics(log: PartitionedLog, settings: OpsSettings) -> TopicsReport:
    """Partitions, end offsets, sizes and configuration of the events, commands and command-results topics."""
    reports = [await _topic(log, name)
               for name in (settings.events_topic, settings.commands_topic, settings.results_topic)]
    return TopicsReport(log.engine, reports, sum(t.total for t in reports))


async def _topic(log: PartitionedLog, name: str) -> TopicReport:
    try:
        ends = await end_offsets(log, name)
        described = await log.describe_topic(name)
    except UnknownTopic:
        return TopicReport(name, False, [], 0)
    sizes = described.partition_bytes
    parts = [PartitionEnd(p, e, None if sizes is None else sizes.get(p, 0)) for p, e in ends.items()]
    size = None if sizes is None else sum(sizes.values())
    return TopicReport(name, True, parts, sum(ends.values()), size, described.config)
