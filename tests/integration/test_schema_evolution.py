"""A log written by a build that knew only schema version 1, read by today's build, on every log engine.

``tests/fixtures/log_v1.jsonl`` holds the records (key, headers, value, timestamp) as that build's
codec wrote them: ``task.created`` at schema version 1, with ``payload`` null or an object and no
skills or dependencies. Each is appended to the partition its key hashes to, then today's runtime
projects it (upcasting on the way) and its command side restores from it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from blackboard.app import ensure_topics
from blackboard.config import Settings
from blackboard.events.codec import to_record
from blackboard.events.log import PartitionedLog, Record
from blackboard.events.partitioner import partition_for
from blackboard.schemas.envelope import Envelope, encode_token
from tests.integration.harness import command, running, settings_for

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "log_v1.jsonl"


class FixtureRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of the fixture: the record's bytes as UTF-8 text (every one of them is)."""

    key: str
    headers: list[tuple[str, str]]
    value: str
    timestamp_ms: int


def fixture_records() -> list[Record]:
    lines = FIXTURE.read_bytes().splitlines()
    decoded = [msgspec.json.decode(line, type=FixtureRecord) for line in lines if line.strip()]
    return [Record(key=r.key.encode(), value=r.value.encode(), headers=tuple((k, v.encode()) for k, v in r.headers),
                   timestamp_ms=r.timestamp_ms) for r in decoded]


@pytest.fixture
def settings(log: PartitionedLog, pg_url: str, topic_prefix: str, request: pytest.FixtureRequest) -> Settings:
    """Settings on the engine of the ``log`` fixture (both engines, one test)."""
    kafka = request.getfixturevalue("kafka_bootstrap") if log.engine == "kafka" else None
    return settings_for(log.engine, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka)


async def append_by_key(log: PartitionedLog, settings: Settings, records: list[Record]) -> dict[int, int]:
    """Append ``records`` in order, each to the partition its key hashes to; the last offset per partition."""
    partitions = await ensure_topics(log, settings)
    by_partition: dict[int, list[Record]] = {}
    for rec in records:
        assert rec.key is not None
        by_partition.setdefault(partition_for(rec.key, partitions), []).append(rec)
    last: dict[int, int] = {}
    for p, batch in by_partition.items():
        start = await log.end_offset(settings.events_topic, p)
        first = await log.append(settings.events_topic, p, batch, expected_offset=start)
        last[p] = first + len(batch) - 1
    return last


def at(second: int) -> str:
    """The ISO time the fixture gave its ``second``-th event (one a second from 10:00:00)."""
    return datetime(2025, 3, 1, 10, 0, second, tzinfo=UTC).isoformat().replace("+00:00", "Z")


def task_doc(tid: str, name: str, priority: int, payload: dict[str, Any] | None, status: str, version: int,
             created: int, updated: int) -> dict[str, Any]:
    return {"id": tid, "name": name, "priority": priority, "payload": payload, "status": status, "version": version,
            "created_at": at(created), "updated_at": at(updated)}


# Written by hand from the fixture's 32 events. A payload that was null, or {}, reads as null:
# version 2 made "no payload" {}, and the read model keeps it NULL, as it always showed it.
TASKS = [
    task_doc("t-1", "render s-1", 5, None, "succeeded", 4, 2, 16),
    task_doc("t-2", "encode", 2, {"frames": 10, "codec": "h264"}, "pending", 5, 6, 21),
    task_doc("t-3", "upscale", -3, None, "pending", 1, 10, 10),
    task_doc("t-4", "mix audio", 0, None, "claimed", 2, 15, 23),
    task_doc("t-5", "thumbnail", 0, {"shot": "s-1", "opts": {"fps": 24, "sizes": [64, 128]}}, "cancelled", 4, 19, 29),
    task_doc("t-6", "subtitle", 1000, None, "claimed", 2, 28, 32),
    task_doc("t-7", "archive", -1000, {"where": "cold"}, "pending", 1, 31, 31),
]
PROJECTS = [
    {"id": "p-1", "title": "Trailer", "currency": "EUR",
     "budget": {"total": "100.00", "spent": "72.50", "remaining": "27.50", "currency": "EUR", "reserved": "0"},
     "global_spec": {"style": "noir"}, "shots": {"s-1": {"status": "review", "id": "s-1", "version": 2}},
     "version": 5, "created_at": at(1), "updated_at": at(17)},
    {"id": "p-2", "title": "Teaser", "currency": "USD",
     "budget": {"total": "50", "spent": "0", "remaining": "50", "currency": "USD", "reserved": "0"}, "global_spec": {},
     "shots": {"s-1": {"status": "draft", "camera": {"lens": 50}, "note": "wide", "id": "s-1", "version": 2},
               "s-2": {"status": "draft", "id": "s-2", "version": 1}},
     "version": 4, "created_at": at(5), "updated_at": at(26)},
    {"id": "p-3", "title": "Short", "currency": "GBP",
     "budget": {"total": "0.00", "spent": "0", "remaining": "0.00", "currency": "GBP", "reserved": "0"},
     "global_spec": {},
     "shots": {}, "version": 1, "created_at": at(13), "updated_at": at(13)},
    {"id": "p-4", "title": "Ads", "currency": "EUR",
     "budget": {"total": "250.0000", "spent": "10.0001", "remaining": "239.9999", "currency": "EUR", "reserved": "0"},
     "global_spec": {"brand": {"colour": "#ff0000"}}, "shots": {}, "version": 3, "created_at": at(20),
     "updated_at": at(30)},
]
# Written before projects had a status, a spec version or a DNA bank: today's defaults.
PROJECTS = [p | {"status": "draft", "spec_version": 1, "dna": {}} for p in PROJECTS]


async def read(client: httpx.AsyncClient, path: str, token: str) -> Any:
    response = await client.get(path, headers={"Blackboard-Consistency": token})
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_v1_log_reads_as_todays_state(log: PartitionedLog, settings: Settings) -> None:
    last = await append_by_key(log, settings, fixture_records())
    token = encode_token(last)
    async with running(settings) as (client, _):
        for expected in TASKS:  # what version 1 knew; later fields take their defaults
            got = await read(client, f"/v1/tasks/{expected['id']}", token)
            assert {k: got[k] for k in expected} == expected
        for expected in PROJECTS:
            assert await read(client, f"/v1/projects/{expected['id']}", token) == expected
        history = await read(client, "/v1/streams/task:t-2/history", token)
        created = history["items"][0]
        # The audit trail shows the event as it was written: version 1, its payload untouched.
        assert (created["type"], created["schema_version"], created["payload"]) == (
            "task.created", 1, {"name": "encode", "priority": 2, "payload": {"frames": 10, "codec": "h264"}})
        assert [i["actor"] for i in history["items"]] == ["bob", "worker-2", "worker-2", "worker-2", "bob"]


async def test_the_command_side_restores_from_a_v1_log(log: PartitionedLog, settings: Settings) -> None:
    await append_by_key(log, settings, fixture_records())
    async with running(settings) as (client, _):
        # The first command of the fixture, sent again: its first outcome, nothing appended.
        again = await command(client, "task.create", "task:t-1", {"name": "render s-1", "priority": 5},
                              command_id="c-002")
        assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true", again.text
        assert again.json()["version"] == 1

        # A v1 task without payload is the same creation as one with an empty payload: no-op at version 4.
        same = await command(client, "task.create", "task:t-1", {"name": "render s-1", "priority": 5, "payload": {}})
        assert (same.status_code, same.json()["version"], same.json()["events"]) == (200, 4, [])
        other = await command(client, "task.create", "task:t-1",
                              {"name": "render s-1", "priority": 5, "required_skills": ["gpu"]})
        assert (other.status_code, other.json()["code"]) == (409, "already_exists")

        # Version 1 set "claimed" by hand, leaving no claim: only an operator's override moves it on.
        legal = await command(client, "task.override_status", "task:t-4",
                              {"status": "pending", "reason": "claimed by hand before claims had holders"})
        assert (legal.status_code, legal.json()["version"]) == (200, 3), legal.text
        retry = await command(client, "task.claim", "task:t-2", {"node": "n-1"})
        assert (retry.status_code, retry.json()["version"]) == (200, 6), retry.text
        illegal = await command(client, "task.set_status", "task:t-1", {"status": "running"})
        assert illegal.status_code == 409
        assert illegal.json()["details"] == {"from": "succeeded", "to": "running", "allowed": []}

        over = await command(client, "project.add_cost", "project:p-1", {"amount": "27.51", "reason": "grade"})
        assert (over.status_code, over.json()["code"]) == (409, "budget_exceeded")
        exact = await command(client, "project.add_cost", "project:p-1", {"amount": "27.50", "reason": "grade"})
        assert (exact.status_code, exact.json()["version"]) == (200, 6)
        stale = await command(client, "project.update_shot", "project:p-2",
                              {"shot_id": "s-1", "patch": {"status": "final"}, "expected_version": 1})
        assert (stale.status_code, stale.json()["code"]) == (409, "version_conflict")

        # A version 2 creation next to the old ones: it carries what version 1 could not.
        new = await command(client, "task.create", "task:t-9",
                            {"name": "grade", "required_skills": ["gpu", "davinci"], "depends_on": ["t-1", "t-2"]})
        assert new.status_code == 200, new.text
        created = new.json()["events"][0]["payload"]
        assert {k: created[k] for k in ("name", "priority", "payload", "required_skills", "depends_on")} == {
            "name": "grade", "priority": 0, "payload": {}, "required_skills": ["gpu", "davinci"],
            "depends_on": ["t-1", "t-2"]}
        doc = await read(client, "/v1/tasks/t-9", new.json()["position"])
        # Blocked until t-1 and t-2 succeed.
        assert (doc["payload"], doc["status"], doc["version"]) == (None, "blocked", 1)
        moved = await read(client, "/v1/tasks/t-4", legal.json()["position"])
        assert (moved["status"], moved["version"]) == ("pending", 3)


def _envelope(stream: str, type_: str, schema_version: int, payload: bytes) -> Envelope:
    return Envelope(
        event_id=str(uuid.uuid4()), stream=stream, stream_version=1, type=type_, schema_version=schema_version,
        occurred_at=datetime(2030, 1, 1, tzinfo=UTC), command_id=f"c-{uuid.uuid4().hex}", correlation_id="corr",
        causation_id="cause", actor="future-build", writer_epoch=1, partition_key=stream.partition(":")[2],
        payload=payload,
    )


def _same_partition_project(key: str, partitions: int) -> str:
    """A project id whose key hashes to the partition of ``key``."""
    return next(f"p-{i}" for i in range(1000) if partition_for(f"p-{i}", partitions) == partition_for(key, partitions))


async def test_a_newer_schema_version_goes_to_the_dead_letters_and_the_rest_applies(
        log: PartitionedLog, settings: Settings) -> None:
    future = to_record(_envelope("task:t-99", "task.created", 99, b'{"name":"from the future","eta":"soon"}'))
    [(partition, offset)] = (await append_by_key(log, settings, [future])).items()
    neighbour = _same_partition_project("t-99", settings.partitions)
    async with running(settings) as (client, runtime):
        later = await command(client, "project.create", f"project:{neighbour}",
                              {"title": "After", "currency": "EUR", "budget_total": "1.00"})
        elsewhere = await command(client, "task.create", "task:t-100", {"name": "after"})
        assert later.status_code == elsewhere.status_code == 200, (later.text, elsewhere.text)
        assert later.json()["position"] == f"{partition}:{offset + 1}", "appended behind the unknown version"
        project = await read(client, f"/v1/projects/{neighbour}", later.json()["position"])
        task = await read(client, "/v1/tasks/t-100", elsewhere.json()["position"])
        assert (project["title"], task["name"]) == ("After", "after")
        missing = await client.get("/v1/tasks/t-99")
        assert missing.status_code == 404
        assert runtime.pool is not None
        letters = await runtime.pool.fetch('SELECT partition, "offset", reason FROM dead_letters')
    assert [(r["partition"], r["offset"]) for r in letters] == [(partition, offset)]
    assert "task.created schema_version 99 is not in 1..2" in letters[0]["reason"]
