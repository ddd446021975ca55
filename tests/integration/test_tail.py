"""``blackboard tail`` over both log engines: ranges, following, filters, and the three formats through the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from blackboard.config import Settings
from blackboard.events.codec import to_record
from blackboard.events.log import PartitionedLog, Record
from blackboard.ops.offsets import end_offsets
from blackboard.ops.tail import Decoded, Filter, parse_time, plan, tail
from blackboard.schemas import project
from tests.factories import OCCURRED_AT, envelope
from tests.integration.harness import settings_for

CREATED = project.ProjectCreated(title="Trailer", currency="EUR", budget_total=Decimal("100"))
COST = project.CostAdded(amount=Decimal("12.50"), reason="render")
GARBAGE = Record(key=b"p-1", value=b"\xff\xfe not json", headers=(("type", b"project.created"),))


def _event(ev: Any, stream: str, version: int, actor: str, correlation: str, hours: int) -> Record:
    return to_record(envelope(ev, stream=stream, version=version, actor=actor, correlation_id=correlation,
                              occurred_at=OCCURRED_AT + timedelta(hours=hours)))


@pytest.fixture
async def settings(log: PartitionedLog, pg_url: str, topic_prefix: str) -> Settings:
    """Settings naming the ``log`` fixture's engine, with an events topic of 2 partitions holding 5 records.

    Partition 0: p-1 created (alice, c-1, +0 h), p-1 cost (bob, c-1, +1 h), a record that is no event.
    Partition 1: p-2 created (alice, c-2, +2 h), p-2 cost (carol, c-2, +3 h).
    """
    kafka = getattr(log, "bootstrap_servers", None)
    settings = settings_for(log.engine, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka)
    await log.create_topic(settings.events_topic, 2)
    await log.append(settings.events_topic, 0, [_event(CREATED, "project:p-1", 1, "alice", "c-1", 0),
                                                _event(COST, "project:p-1", 2, "bob", "c-1", 1)])
    await log.append(settings.events_topic, 0, [GARBAGE])
    await log.append(settings.events_topic, 1, [_event(CREATED, "project:p-2", 1, "alice", "c-2", 2),
                                                _event(COST, "project:p-2", 2, "carol", "c-2", 3)])
    return settings


async def _collect(log: PartitionedLog, settings: Settings, condition: Filter | None = None,
                   **range_: Any) -> list[Decoded]:
    got: list[Decoded] = []
    spans = plan(await end_offsets(log, settings.events_topic), **range_)
    reading = tail(log, settings.events_topic, spans, condition or Filter(), got.append, poll_seconds=0.2)
    await asyncio.wait_for(reading, 30)
    return got


def _where(items: list[Decoded]) -> list[tuple[int, int]]:
    return sorted((i.record.partition, i.record.offset) for i in items)


async def test_ranges_of_offsets_and_partitions(log: PartitionedLog, settings: Settings) -> None:
    assert _where(await _collect(log, settings, from_beginning=True)) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert await _collect(log, settings) == [], "by default only new records"
    assert _where(await _collect(log, settings, partition=0, from_offset=1)) == [(0, 1), (0, 2)]
    assert _where(await _collect(log, settings, from_offset=1, to_offset=2)) == [(0, 1), (1, 1)]
    assert _where(await _collect(log, settings, partition=1, from_offset=5)) == []


async def test_filters_keep_undecodable_records(log: PartitionedLog, settings: Settings) -> None:
    async def where(**condition: Any) -> list[tuple[int, int]]:
        return _where(await _collect(log, settings, Filter(**condition), from_beginning=True))

    assert await where(stream="project:p-1") == [(0, 0), (0, 1), (0, 2)]
    assert await where(type="project.cost_added", actor="carol") == [(0, 2), (1, 1)]
    assert await where(correlation_id="c-2", since=OCCURRED_AT + timedelta(hours=3)) == [(0, 2), (1, 1)]
    assert await where(until=OCCURRED_AT + timedelta(hours=1)) == [(0, 0), (0, 2)]
    [bad] = [i for i in await _collect(log, settings, from_beginning=True) if i.error]
    assert (bad.record.partition, bad.record.offset, bad.envelope) == (0, 2, None)


async def test_a_followed_tail_sees_new_records_and_stops_at_to_offset(log: PartitionedLog,
                                                                       settings: Settings) -> None:
    got: list[Decoded] = []
    spans = plan(await end_offsets(log, settings.events_topic), partition=1, to_offset=4, follow=True)
    following = asyncio.create_task(tail(log, settings.events_topic, spans, Filter(), got.append, poll_seconds=0.2))
    await asyncio.sleep(0.5)
    await log.append(settings.events_topic, 1, [_event(COST, "project:p-2", n, "dave", "c-3", 4) for n in (3, 4, 5)])
    assert await asyncio.wait_for(following, 30) == 2
    assert [(i.record.offset, i.envelope and i.envelope.stream_version) for i in got] == [(2, 3), (3, 4)]


async def test_the_cli_prints_json_raw_and_text(log: PartitionedLog, settings: Settings) -> None:
    json_out = await _cli(settings, "--from-beginning", "--format", "json")
    assert json_out.returncode == 0, json_out.stderr
    docs = [msgspec.json.decode(line) for line in json_out.stdout.splitlines()]
    assert sorted((d["partition"], d["offset"]) for d in docs) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    first = next(d for d in docs if (d["partition"], d["offset"]) == (0, 1))
    assert (first["stream"], first["actor"], first["type"]) == ("project:p-1", "bob", "project.cost_added")
    assert first["payload"] == {"amount": "12.50", "reason": "render", "artifact_id": None}
    assert parse_time(first["occurred_at"]) == OCCURRED_AT + timedelta(hours=1)
    [bad] = [d for d in docs if "undecodable" in d]
    assert (bad["partition"], bad["offset"]) == (0, 2) and "missing headers" in bad["undecodable"]

    raw = await _cli(settings, "--partition", "0", "--from-offset", "2", "--format", "raw")
    [line] = [msgspec.json.decode(x) for x in raw.stdout.splitlines()]
    assert line["key"] == {"encoding": "text", "data": "p-1"} and line["headers"] == [["type", {
        "encoding": "text", "data": "project.created"}]]
    assert line["value"]["encoding"] == "base64"

    text = await _cli(settings, "--from-beginning", "--actor", "alice", "--since", "2025-01-02T04:00:00Z")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and "project:p-2@1" in lines[1] and "undecodable" in lines[0]


async def test_a_bare_tail_prints_the_last_records_and_stops(log: PartitionedLog, settings: Settings) -> None:
    bare = await _cli(settings, "--format", "json")
    assert bare.returncode == 0, bare.stderr
    shown = sorted((d["partition"], d["offset"]) for d in map(msgspec.json.decode, bare.stdout.splitlines()))
    # Fewer than the last 10 of each partition: all of them (plan's unit tests cover --last N).
    assert shown == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


async def test_the_cli_refuses_a_bad_time_or_partition(log: PartitionedLog, settings: Settings) -> None:
    bad_time = await _cli(settings, "--since", "yesterday")
    assert bad_time.returncode == 1 and "'yesterday' is not an ISO-8601 time" in bad_time.stderr
    bad_partition = await _cli(settings, "--partition", "7")
    assert bad_partition.returncode == 1 and "partition 7 does not exist" in bad_partition.stderr


async def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``blackboard tail ARGS`` in a subprocess, configured by environment variables only."""
    assert settings.postgres_url is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    env.update(BLACKBOARD_POSTGRES_URL=settings.postgres_url.get_secret_value(),
               BLACKBOARD_TOPIC_PREFIX=settings.topic_prefix, COLUMNS="300")
    if settings.kafka_bootstrap_servers:
        env["BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "blackboard.cli", "tail", *args], env=env,
                                   capture_output=True, text=True, timeout=60)
