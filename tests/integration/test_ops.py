"""The operator commands over real services: topics, lag, dead letters and verify, in-process and through the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from blackboard.config import Settings
from blackboard.connect import opened_log, read_pool
from blackboard.events.log import PartitionedLog, Record
from blackboard.ops.dead_letters import Bytes, dead_letter, dead_letters
from blackboard.ops.lag import lag
from blackboard.ops.offsets import end_offsets
from blackboard.ops.topics import topics
from blackboard.ops.verify import verify
from blackboard.projector.migrate import migrate
from blackboard.projector.runtime import Projector
from tests.integration.harness import command, running, settings_for

PROJECT = {"title": "Trailer", "currency": "EUR", "budget_total": "100.00"}


@pytest.fixture(params=["postgres", "kafka"])
def settings(request: pytest.FixtureRequest, pg_url: str, topic_prefix: str) -> Settings:
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return settings_for(request.param, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka)


@pytest.fixture
def pg_settings(pg_url: str, topic_prefix: str) -> Settings:
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)


def _url(settings: Settings) -> str:
    assert settings.postgres_url is not None
    return settings.postgres_url.get_secret_value()


@pytest.fixture
async def ops_log(settings: Settings) -> AsyncIterator[PartitionedLog]:
    async with opened_log(settings, _url(settings)) as log:
        yield log


async def _traffic(settings: Settings, *, projector: bool) -> None:
    """Two projects, a cost, a shot and a task: six events, on whichever partitions their keys hash to."""
    roles = frozenset({"command", "projector", "query"} if projector else {"command"})
    async with running(settings, roles=roles) as (client, _):
        for stream in ("project:p-1", "project:p-2"):
            assert (await command(client, "project.create", stream, PROJECT)).status_code == 200
        cost = {"amount": "12.50", "reason": "render"}
        shot = {"shot_id": "s-1", "patch": {"prompt": "rain"}, "expected_version": 0}
        assert (await command(client, "project.add_cost", "project:p-1", cost)).status_code == 200
        assert (await command(client, "project.update_shot", "project:p-1", shot)).status_code == 200
        task = await command(client, "task.create", "task:t-1", {"name": "render"})
        assert task.status_code == 200
        if projector:
            await client.get("/v1/tasks/t-1", headers={"Blackboard-Consistency": task.json()["position"]})


async def _catch_up(settings: Settings, log: PartitionedLog, pool: asyncpg.Pool) -> None:
    """Run the live projection until its lag is 0."""
    projector = Projector(log, pool, topic=settings.events_topic)
    task = asyncio.create_task(projector.run())
    try:
        deadline = time.monotonic() + 10
        while (await lag(log, pool, settings)).total:
            assert time.monotonic() < deadline, "the projector did not catch up"
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_topics_and_lag_count_what_was_appended(settings: Settings, ops_log: PartitionedLog) -> None:
    await _traffic(settings, projector=False)
    report = await topics(ops_log, settings)
    events, commands, results = report.topics
    assert (events.name, events.exists, len(events.partitions), events.total) == (settings.events_topic, True, 4, 5)
    assert commands.exists and results.exists and len(commands.partitions) == 4
    assert report.total == sum(t.total for t in report.topics)
    ends = {p.partition: p.end_offset for p in events.partitions}
    assert ends == {p: await ops_log.end_offset(settings.events_topic, p) for p in range(4)}
    assert events.config is not None and events.config["retention.ms"] == "-1", "events are kept forever"
    if settings.kafka_bootstrap_servers:
        assert events.size_bytes is None and {p.size_bytes for p in events.partitions} == {None}
    else:
        sizes = {p.partition: p.size_bytes for p in events.partitions}
        assert events.size_bytes == sum(s or 0 for s in sizes.values())
        assert all((size or 0) > 0 for p, size in sizes.items() if ends[p]), sizes
        assert all(size == 0 for p, size in sizes.items() if not ends[p]), sizes

    async with read_pool(settings, _url(settings)) as pool:
        before = await lag(ops_log, pool, settings)
        assert before.total == 5
        assert {p.partition: p.lag for p in before.partitions} == ends
        assert {p.next_offset for p in before.partitions} == {None}, "no projector has run yet"
        await _catch_up(settings, ops_log, pool)
        after = await lag(ops_log, pool, settings)
    assert after.total == 0
    assert {p.partition: p.next_offset for p in after.partitions} == ends


async def test_lag_estimates_the_time_to_catch_up_from_two_samples(pg_settings: Settings) -> None:
    """One partition moves by 2 during the sample, the others stand still: a rate, an ETA, or ∞ (null)."""
    await _traffic(pg_settings, projector=False)
    url = _url(pg_settings)
    topic = pg_settings.events_topic
    async with opened_log(pg_settings, url) as log, read_pool(pg_settings, url) as pool:
        await migrate(pool, pg_settings.read_schema)
        ends = await end_offsets(log, topic)
        busiest = max(ends, key=lambda p: ends[p])
        assert ends[busiest] >= 3
        set_offset = ("INSERT INTO projection_offsets (projection, topic, partition, next_offset) "
                      "VALUES ('main', $1, $2, $3) "
                      "ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset")
        for p, end in ends.items():
            await pool.execute(set_offset, topic, p, 0 if p == busiest else end)

        async def advance() -> None:
            await asyncio.sleep(0.3)
            await pool.execute(set_offset, topic, busiest, 2)

        report, _ = await asyncio.gather(lag(log, pool, pg_settings, sample_seconds=1.0), advance())
        rows = {r.partition: r for r in report.partitions}
        moving = rows[busiest]
        assert moving.lag == ends[busiest] - 2 and moving.rate is not None and 1.0 < moving.rate <= 2.0
        assert moving.eta_seconds == pytest.approx(moving.lag / moving.rate)
        assert all(r.eta_seconds == 0.0 and r.rate == 0.0 for p, r in rows.items() if p != busiest)
        assert report.eta_seconds == moving.eta_seconds and report.sample_seconds == 1.0

        stalled = await lag(log, pool, pg_settings, sample_seconds=0.2)
        assert {r.partition: r.eta_seconds for r in stalled.partitions}[busiest] is None
        assert stalled.eta_seconds is None, "a partition that does not move never catches up"
        unsampled = await lag(log, pool, pg_settings)
        assert {r.rate for r in unsampled.partitions} == {None}
    out = await _cli(pg_settings, "lag", "--sample-seconds", "0.2", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = msgspec.json.decode(out.stdout)
    assert doc["eta_seconds"] is None and doc["sample_seconds"] == 0.2
    assert {p["partition"]: p["eta_seconds"] for p in doc["partitions"]}[busiest] is None
    table = await _cli(pg_settings, "lag", "--sample-seconds", "0.2")
    assert table.returncode == 0 and "∞" in table.stdout, table.stderr
    topics = await _cli(pg_settings, "topics")
    assert topics.returncode == 0 and "retention.ms=-1" in topics.stdout, topics.stderr


async def test_topics_of_an_empty_log(pg_settings: Settings) -> None:
    async with opened_log(pg_settings, _url(pg_settings)) as log:
        report = await topics(log, pg_settings)
    assert [(t.exists, t.total) for t in report.topics] == [(False, 0)] * 3


async def test_a_poison_record_is_listed_and_shown(pg_settings: Settings) -> None:
    await _traffic(pg_settings, projector=True)
    url = _url(pg_settings)
    async with opened_log(pg_settings, url) as log, read_pool(pg_settings, url) as pool:
        bad = Record(key=b"project:p-9", value=b"\xff\xfe not json", headers=(("type", b"project.created"),))
        offset = await log.append(pg_settings.events_topic, 2, [bad])
        await _catch_up(pg_settings, log, pool)
        listed = await dead_letters(pool, limit=5)
        assert listed.total == 1
        [letter] = listed.dead_letters
        assert (letter.topic, letter.partition, letter.offset) == (pg_settings.events_topic, 2, offset)
        assert letter.reason.startswith("undecodable")
        shown = await dead_letter(pool, letter.id)
        assert await dead_letter(pool, letter.id + 1000) is None
    assert shown is not None and shown.reason == letter.reason
    assert shown.key == Bytes("utf-8", "project:p-9")
    assert shown.value == Bytes("hex", "fffe206e6f74206a736f6e")
    assert shown.headers["type"] == "project.created"
    out = await _cli(pg_settings, "dead-letters", "show", str(letter.id), "--format", "json")
    assert out.returncode == 0, out.stderr
    assert msgspec.json.decode(out.stdout)["value"] == {"encoding": "hex", "data": "fffe206e6f74206a736f6e"}
    table = await _cli(pg_settings, "dead-letters", "list")
    assert table.returncode == 0 and "undecodable" in table.stdout, table.stderr
    missing = await _cli(pg_settings, "dead-letters", "show", str(letter.id + 1000))
    assert missing.returncode == 1 and f"no dead letter with id {letter.id + 1000}" in missing.stderr


async def test_verify_finds_equal_then_a_tampered_row(pg_settings: Settings) -> None:
    await _traffic(pg_settings, projector=True)
    url = _url(pg_settings)
    async with opened_log(pg_settings, url) as log, read_pool(pg_settings, url) as pool:
        report = await verify(log, pool, url, pg_settings, timeout=10)
        assert report.equal, report
        counts = {t.table: (t.live_rows, t.rebuilt_rows) for t in report.tables}
        assert counts == {"projects": (2, 2), "shots": (1, 1), "artifacts": (0, 0), "leases": (0, 0), "tasks": (1, 1),
                          "change_log": (5, 5), "nodes": (0, 0), "clocks": (0, 0), "sagas": (0, 0),
                          "documents": (0, 0), "checkpoints": (0, 0), "checkpoint_entries": (0, 0)}
        await pool.execute("UPDATE projects SET spent = 99 WHERE id = 'p-2'")
        assert await _verify_schemas(pool) == [], "verify drops its temporary schema"
    out = await _cli(pg_settings, "verify", "--format", "json")
    assert out.returncode == 1, out.stderr
    doc: dict[str, Any] = msgspec.json.decode(out.stdout)
    tables = {t["table"]: t for t in doc["tables"]}
    assert doc["equal"] is False and tables["projects"]["differing_keys"] == [["p-2"]]
    assert all(tables[t]["equal"] for t in ("shots", "tasks", "change_log"))


async def _verify_schemas(pool: asyncpg.Pool) -> list[str]:
    rows = await pool.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'verify\\_%'")
    return [r["nspname"] for r in rows]


async def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``blackboard ARGS`` in a subprocess, configured by environment variables only."""
    env = {**os.environ, "BLACKBOARD_POSTGRES_URL": _url(settings), "BLACKBOARD_TOPIC_PREFIX": settings.topic_prefix}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "blackboard.cli", *args], env=env,
                                   capture_output=True, text=True, timeout=60)
