"""``blackboard doctor``'s replication checks: does each topic have the replicas and ISR the settings ask for?

Settings apply only to topics created after them (a broker keeps an existing topic's), so a topic
created before ``BLACKBOARD_KAFKA_REPLICATION_FACTOR`` was raised still has its old replicas: this
says so instead of letting the guarantees of docs/guarantees.md be assumed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import msgspec

from blackboard.events.log import PartitionedLog, TopicDescription

#: The environment variables behind the expected values, named in every problem.
REPLICATION_SETTING = "BLACKBOARD_KAFKA_REPLICATION_FACTOR"
INSYNC_SETTING = "BLACKBOARD_KAFKA_MIN_INSYNC_REPLICAS"

Verdict = Literal["ok", "warn", "fail"]


class Replication(msgspec.Struct, frozen=True):
    """What the settings ask of every topic created: replicas and ``min.insync.replicas``."""

    replicas: int
    min_insync: int


def replication_verdict(expected: Replication, replicas: int | None,
                        config: Mapping[str, str] | None) -> tuple[Verdict, str]:
    """(status, detail) of a topic with ``replicas`` and ``config`` against ``expected``.

    ``fail`` when the topic is weaker than asked (fewer replicas, a lower ``min.insync.replicas``:
    an acknowledgement promises less), ``warn`` when it differs otherwise (more than asked: writes
    stop sooner when brokers are lost), ``ok`` when it matches; ``None`` values cannot be told.
    """
    weaker: list[str] = []
    other: list[str] = []
    if replicas is not None and replicas != expected.replicas:
        (weaker if replicas < expected.replicas else other).append(
            f"replication factor is {replicas}; the settings ask for {expected.replicas} ({REPLICATION_SETTING})")
    insync = (config or {}).get("min.insync.replicas")
    if config is not None and insync != str(expected.min_insync):
        told = int(insync) if insync is not None and insync.isdigit() else 1  # unset: the broker's default, 1
        (weaker if told < expected.min_insync else other).append(
            f"min.insync.replicas is {insync or 'unset (the broker default)'}; the settings ask for "
            f"{expected.min_insync} ({INSYNC_SETTING})")
    if weaker or other:
        return ("fail" if weaker else "warn"), "; ".join(weaker + other)
    if replicas is None or config is None:
        return "warn", "the broker cannot tell the topic's replication"
    return "ok", f"{replicas} replica(s), min.insync.replicas {insync}"


async def expected_replication(log: PartitionedLog) -> Replication | None:
    """What ``log`` creates topics with (the settings, or the defaults for this cluster); ``None``
    for an engine without replicas of its own (the PostgreSQL log)."""
    asking: Callable[[], Awaitable[tuple[int, int]]] | None = getattr(log, "replication", None)
    if asking is None:
        return None
    replicas, insync = await asking()
    return Replication(replicas, insync)


async def replication_checks(log: PartitionedLog, topics: list[str],
                             timeout: float) -> list[tuple[str, Verdict, str]]:
    """(name, status, detail) per topic in ``topics``; nothing on an engine without replicas."""
    expected = await asyncio.wait_for(expected_replication(log), timeout)
    if expected is None:
        return []
    out: list[tuple[str, Verdict, str]] = []
    for topic in topics:
        name = f"replication {topic}"
        try:
            described: TopicDescription = await asyncio.wait_for(log.describe_topic(topic), timeout)
        except Exception as exc:
            out.append((name, "warn", f"cannot tell: {_reason(exc)}"))
            continue
        out.append((name, *replication_verdict(expected, described.replicas, described.config)))
    return out


def _reason(exc: Any) -> str:
    return "no answer in time" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
