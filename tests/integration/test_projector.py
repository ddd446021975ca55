"""The projector on a real PostgreSQL and a real Redis: rows, change log, offsets, dead letters, cache."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any, cast

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from blackboard.events.codec import to_record
from blackboard.events.log import PartitionedLog, Record
from blackboard.projector.cache import CachedDoc, CacheUnavailable, DocumentCache
from blackboard.projector.documents import project_view, task_view
from blackboard.projector.migrate import create_pool, migrate, migrations
from blackboard.projector.runtime import AppliedBatch, Projector
from blackboard.schemas.project import CostAdded, ProjectCreated, ShotUpdated
from blackboard.schemas.task import TaskCreated, TaskStatusChanged
from tests.factories import Partition, envelope
from tests.services import RedisServer, free_port

TOPIC = "events"
# ``apply`` never reads the log; only ``run`` does.
NO_LOG = cast(PartitionedLog, None)


# ── fixtures: over the suite's services (tests/conftest.py) ────────────────────────────


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool over the read-model schema, freshly migrated in the test's own database."""
    pool = await create_pool(pg_url, "blackboard", min_size=1, max_size=4)
    assert (await migrate(pool, "blackboard"))[0] == "0001_read_models"
    yield pool
    await pool.close()


@pytest.fixture
async def cache(redis_url: str, redis_prefix: str) -> AsyncIterator[DocumentCache]:
    client = aioredis.from_url(redis_url, socket_timeout=2.0)
    yield DocumentCache(client, prefix=redis_prefix, ttl_seconds=60)
    await client.aclose()


@pytest.fixture
async def dead_cache() -> AsyncIterator[DocumentCache]:
    """A cache whose Redis is not there: nothing listens on its port."""
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    yield DocumentCache(client, prefix="x:", ttl_seconds=60)
    await client.aclose()


# ── helpers ───────────────────────────────────────────────────────────────────────────


def project_history(part: Partition, pid: str = "p-1") -> None:
    """A project created, charged, and one shot patched twice: versions 1..4."""
    stream = f"project:{pid}"
    part.event(ProjectCreated("Trailer", "EUR", Decimal("100.00"), {"style": "noir"}), stream=stream, version=1)
    part.event(CostAdded(Decimal("12.50"), "render"), stream=stream, version=2)
    part.event(ShotUpdated("s-1", {"status": "draft", "camera": {"lens": 35, "iso": 800}}, 1), stream=stream,
               version=3)
    part.event(ShotUpdated("s-1", {"camera": {"lens": 50, "iso": None}, "note": "wide"}, 2), stream=stream,
               version=4)


def task_history(part: Partition, tid: str = "t-1") -> None:
    stream = f"task:{tid}"
    part.event(TaskCreated("render", 5, {"frames": 10}), stream=stream, version=1)
    part.event(TaskStatusChanged("pending", "claimed"), stream=stream, version=2)


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every read-model table, in a stable order."""
    order = {"projects": "id", "shots": "project_id, shot_id", "tasks": "id", "change_log": "stream, stream_version",
             "dead_letters": 'partition, "offset"', "projection_offsets": "partition"}
    return {t: [tuple(r.values()) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY {o}")]
            for t, o in order.items()}


async def stored_positions(pool: asyncpg.Pool, topic: str = TOPIC) -> dict[int, int]:
    positions: dict[int, int] = await Projector(NO_LOG, pool, topic=topic).positions()
    return positions


async def reasons(pool: asyncpg.Pool) -> dict[int, str]:
    rows = await pool.fetch('SELECT "offset", reason FROM dead_letters ORDER BY "offset"')
    return {r["offset"]: r["reason"] for r in rows}


# ── the fold ──────────────────────────────────────────────────────────────────────────


async def test_a_batch_writes_rows_change_log_and_offsets(pool: asyncpg.Pool) -> None:
    p0, p1 = Partition(TOPIC, 0), Partition(TOPIC, 1, start=40)
    project_history(p0)
    task_history(p1)

    batch = await Projector(NO_LOG, pool, topic=TOPIC).apply(p0.records + p1.records)

    assert batch == AppliedBatch(applied=6, positions={0: 4, 1: 42})
    project = await pool.fetchrow("SELECT * FROM projects WHERE id = 'p-1'")
    assert (project["spent"], project["budget_total"], project["version"]) == (Decimal("12.5"), Decimal(100), 4)
    assert (project["partition"], project["last_offset"], project["global_spec"]) == (0, 3, {"style": "noir"})
    shot = await pool.fetchrow("SELECT * FROM shots WHERE project_id = 'p-1' AND shot_id = 's-1'")
    assert shot["fields"] == {"status": "draft", "camera": {"lens": 50}, "note": "wide"} and shot["version"] == 2
    task = await pool.fetchrow("SELECT * FROM tasks WHERE id = 't-1'")
    assert (task["status"], task["version"], task["payload"], task["last_offset"]) == ("claimed", 2, {"frames": 10}, 41)
    changes = await pool.fetch("SELECT * FROM change_log ORDER BY stream, stream_version")
    assert [(c["stream"], c["stream_version"], c["offset"]) for c in changes] == [
        ("project:p-1", 1, 0), ("project:p-1", 2, 1), ("project:p-1", 3, 2), ("project:p-1", 4, 3),
        ("task:t-1", 1, 40), ("task:t-1", 2, 41)]
    assert changes[1]["payload"] == {"amount": "12.50", "reason": "render", "artifact_id": None}
    assert changes[1]["actor"] == "tester" and changes[1]["type"] == "project.cost_added"
    assert await stored_positions(pool) == {0: 4, 1: 42}


async def test_reapplying_the_same_records_changes_nothing(pool: asyncpg.Pool) -> None:
    part = Partition(TOPIC, 0)
    project_history(part)
    task_history(part)
    projector = Projector(NO_LOG, pool, topic=TOPIC)
    await projector.apply(part.records)
    before = await snapshot(pool)

    again = await projector.apply(part.records)

    assert again == AppliedBatch(skipped=6)
    assert await snapshot(pool) == before


async def test_a_reader_behind_the_stored_offset_applies_only_the_new_records(pool: asyncpg.Pool) -> None:
    part = Partition(TOPIC, 0)
    project_history(part)
    task_history(part)
    projector = Projector(NO_LOG, pool, topic=TOPIC)
    await projector.apply(part.records[:3])

    batch = await projector.apply(part.records[1:])

    assert batch == AppliedBatch(applied=3, skipped=2, positions={0: 6})
    assert await pool.fetchval("SELECT count(*) FROM change_log") == 6
    assert await pool.fetchval("SELECT spent FROM projects") == Decimal("12.5")


async def test_a_duplicate_event_is_skipped_in_the_same_batch_and_in_a_later_one(pool: asyncpg.Pool) -> None:
    part = Partition(TOPIC, 0)
    part.event(ProjectCreated("T", "EUR", Decimal(10), {}), stream="project:p-1", version=1)
    cost = to_record(envelope(CostAdded(Decimal(3), "r"), stream="project:p-1", version=2))
    part.add(cost)
    part.add(cost)  # an ambiguous produce: the same event twice
    projector = Projector(NO_LOG, pool, topic=TOPIC)
    first = await projector.apply(part.records)
    part.add(cost)

    later = await projector.apply(part.records[3:])

    assert first == AppliedBatch(applied=2, duplicates=1, positions={0: 3})
    assert later == AppliedBatch(duplicates=1, positions={0: 4})
    assert await pool.fetchval("SELECT spent FROM projects") == Decimal(3)
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert await stored_positions(pool) == {0: 4}


async def test_another_event_at_a_recorded_version_is_a_dead_letter(pool: asyncpg.Pool) -> None:
    part = Partition(TOPIC, 0)
    part.event(ProjectCreated("T", "EUR", Decimal(10), {}), stream="project:p-1", version=1)
    first = part.event(CostAdded(Decimal(3), "r"), stream="project:p-1", version=2)
    projector = Projector(NO_LOG, pool, topic=TOPIC)
    await projector.apply(part.records)
    part.event(CostAdded(Decimal(4), "zombie"), stream="project:p-1", version=2)

    batch = await projector.apply(part.records[2:])

    assert batch == AppliedBatch(dead_letters=1, positions={0: 3})
    first_id = dict(first.headers)["event_id"].decode()
    assert f"project:p-1 version 2 is event {first_id}" in (await reasons(pool))[2]
    assert await pool.fetchval("SELECT spent FROM projects") == Decimal(3)


async def test_poison_records_become_dead_letters_and_the_rest_applies(pool: asyncpg.Pool) -> None:
    part = Partition(TOPIC, 0)
    part.event(ProjectCreated("T", "EUR", Decimal(10), {}), stream="project:p-1", version=1)
    # Records 1-5 are of a stream of their own: a stream with a dead letter holds its later events.
    cost = envelope(CostAdded(Decimal(1), "r"), stream="project:p-9", version=2)
    part.add(to_record(msgspec.structs.replace(cost, payload=b"\xff{not json")))                 # 1
    part.add(to_record(msgspec.structs.replace(cost, type="project.renamed")))                  # 2
    part.add(to_record(msgspec.structs.replace(cost, schema_version=2)))                        # 3
    part.add(Record(key=None, value=cost.payload, headers=to_record(cost).headers))             # 4
    part.add(to_record(msgspec.structs.replace(cost, payload=b"")))                             # 5
    part.event(CostAdded(Decimal(1), "r"), stream="project:p-404", version=1)                   # 6
    part.event(CostAdded(Decimal(11), "r"), stream="project:p-1", version=2)                    # 7
    part.event(CostAdded(Decimal(1), "r"), stream="project:p-1", version=5)                     # 8
    part.event(ProjectCreated("nul\x00title", "EUR", Decimal(1), {}), stream="project:p-2", version=1)  # 9
    part.event(CostAdded(Decimal(2), "r"), stream="project:p-1", version=2)                     # 10
    part.event(CostAdded(Decimal(1), "r"), stream="task:t-9", version=1)                        # 11
    task_history(part)                                                                          # 12, 13

    batch = await Projector(NO_LOG, pool, topic=TOPIC).apply(part.records)

    assert batch == AppliedBatch(applied=3, dead_letters=11, positions={0: 14})
    got = await reasons(pool)
    expected = {1: "undecodable", 2: "unknown event type 'project.renamed'", 3: "schema_version 2 is not in 1..1",
                4: "record has no key", 5: "undecodable: DecodeError", 6: "project 'p-404' does not exist",
                7: "more than the total 10", 8: "held behind an unresolved dead letter of project:p-1",
                9: "rejected by the read model", 10: "held behind an unresolved dead letter of project:p-1",
                11: "does not belong on stream 'task:t-9'"}
    assert got.keys() == expected.keys()
    for offset, fragment in expected.items():
        assert fragment in got[offset], (offset, got[offset])
    assert (await pool.fetchval("SELECT spent FROM projects WHERE id = 'p-1'")) == Decimal(0)
    assert await pool.fetchval("SELECT count(*) FROM projects WHERE id = 'p-2'") == 0
    assert await pool.fetchval("SELECT status FROM tasks WHERE id = 't-1'") == "claimed"
    assert await stored_positions(pool) == {0: 14}


async def test_records_postgresql_refuses_are_found_among_many_and_set_aside(pool: asyncpg.Pool) -> None:
    part = Partition(TOPIC, 0)
    for i in range(40):
        part.event(ProjectCreated(f"P{i}", "EUR", Decimal(100), {}), stream=f"project:p-{i}", version=1)
    nul_patch = to_record(envelope(ShotUpdated("s-1", {}, 1), stream="project:p-7", version=2))
    part.add(msgspec.structs.replace(nul_patch, value=b'{"shot_id":"s-1","patch":{"k":"\\u0000"},"shot_version":1}'))
    part.event(CostAdded(Decimal(1), "after the refused one"), stream="project:p-7", version=3)
    part.event(ProjectCreated("T", "TOOLONG", Decimal(1), {}), stream="project:q-1", version=1)
    for i in range(40):
        part.event(CostAdded(Decimal(2), "r"), stream=f"project:p-{i}", version=2 if i != 7 else 4)

    batch = await Projector(NO_LOG, pool, topic=TOPIC).apply(part.records)

    assert batch == AppliedBatch(applied=79, dead_letters=4, positions={0: 83})
    got = await reasons(pool)
    assert "\\u0000 cannot be converted to text" in got[40]
    assert "held behind an unresolved dead letter of project:p-7" in got[41]
    assert "value too long" in got[42]
    assert "held behind an unresolved dead letter of project:p-7" in got[50]
    assert await pool.fetchval("SELECT sum(spent) FROM projects") == Decimal(78)
    assert await pool.fetchval("SELECT count(*) FROM change_log") == 79


async def test_a_dead_letter_keeps_the_record_as_it_was(pool: asyncpg.Pool) -> None:
    part = Partition(TOPIC, 3, start=7)
    record = Record(key=b"p-1", value=b"\x00garbage", headers=(("type", b"project.cost_added"), ("bin", b"\xff\x00")))
    part.add(record)

    await Projector(NO_LOG, pool, topic=TOPIC).apply(part.records)

    row = await pool.fetchrow("SELECT * FROM dead_letters")
    assert (row["projection"], row["topic"], row["partition"], row["offset"]) == ("main", TOPIC, 3, 7)
    assert (row["key"], row["value"]) == (b"p-1", b"\x00garbage")
    assert row["headers"] == {"type": "project.cost_added", "bin": "\\xff\\x00"}
    assert "a header is not UTF-8" in row["reason"]


async def test_an_offset_row_per_partition_equals_the_last_applied_offset_plus_one(pool: asyncpg.Pool) -> None:
    projector = Projector(NO_LOG, pool, topic=TOPIC)
    await projector.ensure_offsets(4)
    parts = [Partition(TOPIC, p, start=10 * p) for p in range(3)]
    for i, part in enumerate(parts):
        project_history(part, pid=f"p-{i}")

    await projector.apply([r for part in parts for r in part.records])

    assert await projector.positions() == {0: 4, 1: 14, 2: 24, 3: 0}


# ── migrations ────────────────────────────────────────────────────────────────────────


async def test_migrations_apply_once_even_when_processes_race(pg_url: str) -> None:
    schema = f"m_{uuid.uuid4().hex[:12]}"
    conns = [await asyncpg.connect(pg_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c, schema) for c in conns))
        shipped = [m.name for m in migrations()]
        # Each migration ran once, in one of the processes, whichever won each one's lock.
        assert sorted(name for names in applied for name in names) == shipped
        assert await migrate(conns[0], schema) == []
        rows = await conns[0].fetch(f"SELECT version, name FROM {schema}.schema_migrations ORDER BY version")
        assert [tuple(r.values()) for r in rows] == [(m.version, m.name) for m in migrations()]
    finally:
        for conn in conns:
            await conn.close()


# ── the cache ─────────────────────────────────────────────────────────────────────────


async def test_the_cache_never_goes_back_to_an_older_version(cache: DocumentCache) -> None:
    await cache.put_many([CachedDoc("project", "p-1", 2, 0, 9, b'{"v":2}')])

    written = await cache.put_many([CachedDoc("project", "p-1", 1, 0, 4, b'{"v":1}'),
                                    CachedDoc("project", "p-1", 2, 0, 9, b'{"v":"again"}')])

    assert written == 0
    assert await cache.get("project", "p-1") == CachedDoc("project", "p-1", 2, 0, 9, b'{"v":2}')
    await cache.put_many([CachedDoc("project", "p-1", 3, 1, 12, b'{"v":3}')])
    assert await cache.get("project", "p-1") == CachedDoc("project", "p-1", 3, 1, 12, b'{"v":3}')


async def test_put_many_writes_a_whole_batch_in_one_call(cache: DocumentCache) -> None:
    docs = [CachedDoc("task", f"t-{i}", i + 1, i % 4, i, msgspec.json.encode({"i": i})) for i in range(2000)]

    assert await cache.put_many(docs) == 2000

    assert await cache.get("task", "t-1999") == docs[1999]
    assert await cache.get("task", "t-missing") is None
    assert 0 < await cache.redis.ttl(cache.key("task", "t-7")) <= 60
    assert await cache.put_many(docs) == 0


async def test_put_many_loads_the_script_when_redis_forgot_it(cache: DocumentCache) -> None:
    await cache.redis.script_flush()

    assert await cache.put_many([CachedDoc("task", "t-1", 1, 0, 0, b"{}")]) == 1


async def test_a_missing_redis_is_cache_unavailable(dead_cache: DocumentCache) -> None:
    with pytest.raises(CacheUnavailable):
        await dead_cache.put_many([CachedDoc("task", "t-1", 1, 0, 0, b"{}")])
    with pytest.raises(CacheUnavailable):
        await dead_cache.get("task", "t-1")


async def test_cached_documents_are_the_bytes_postgresql_gives(pool: asyncpg.Pool, cache: DocumentCache) -> None:
    part = Partition(TOPIC, 0)
    created = envelope(ProjectCreated("T", "EUR", Decimal(100), {}), stream="project:p-1", version=1)
    # Key order, exponents and trailing zeros that jsonb normalises: the document must not depend on them.
    spec = b'{"title":"T","currency":"EUR","budget_total":"100","global_spec":{"z":1E+2,"a":[1.10,{"y":0,"b":"x"}]}}'
    part.add(to_record(msgspec.structs.replace(created, payload=spec)))
    part.event(CostAdded(Decimal("0.01"), "r"), stream="project:p-1", version=2)
    part.event(ShotUpdated("s-b", {"z": 1, "a": 2}, 1), stream="project:p-1", version=3)
    part.event(ShotUpdated("s-a", {"k": "v"}, 1), stream="project:p-1", version=4)
    task_history(part)

    await Projector(NO_LOG, pool, topic=TOPIC, cache=cache).apply(part.records)

    row = await pool.fetchrow("SELECT * FROM projects WHERE id = 'p-1'")
    shots = await pool.fetch("SELECT * FROM shots WHERE project_id = 'p-1' ORDER BY shot_id DESC")
    cached = await cache.get("project", "p-1")
    assert cached is not None and (cached.version, cached.partition, cached.offset) == (4, 0, 3)
    assert cached.doc == msgspec.json.encode(project_view(row, shots))
    assert msgspec.json.decode(cached.doc)["budget"]["remaining"] == "99.99"
    task = await cache.get("task", "t-1")
    assert task is not None and task.version == 2
    assert task.doc == msgspec.json.encode(task_view(await pool.fetchrow("SELECT * FROM tasks")))


async def test_a_batch_without_shot_events_keeps_the_shots_in_the_cached_document(pool: asyncpg.Pool,
                                                                                  cache: DocumentCache) -> None:
    part = Partition(TOPIC, 0)
    project_history(part)
    part.event(ProjectCreated("Bare", "EUR", Decimal(10), {}), stream="project:p-2", version=1)
    part.event(CostAdded(Decimal("1.00"), "r"), stream="project:p-1", version=5)
    part.event(CostAdded(Decimal("1.00"), "r"), stream="project:p-2", version=2)
    projector = Projector(NO_LOG, pool, topic=TOPIC, cache=cache)
    await projector.apply(part.records[:5])
    await projector.apply(part.records[5:])  # budget events only: the shots are not loaded for p-2

    for pid in ("p-1", "p-2"):
        row = await pool.fetchrow("SELECT * FROM projects WHERE id = $1", pid)
        shots = await pool.fetch("SELECT * FROM shots WHERE project_id = $1", pid)
        cached = await cache.get("project", pid)
        assert cached is not None and cached.doc == msgspec.json.encode(project_view(row, shots))
    assert list(msgspec.json.decode((await cache.get("project", "p-1")).doc)["shots"]) == ["s-1"]  # type: ignore[union-attr]


async def test_a_later_batch_replaces_the_cached_document(pool: asyncpg.Pool, cache: DocumentCache) -> None:
    part = Partition(TOPIC, 0)
    project_history(part)
    projector = Projector(NO_LOG, pool, topic=TOPIC, cache=cache)
    await projector.apply(part.records[:2])
    await projector.apply(part.records[2:])

    cached = await cache.get("project", "p-1")

    assert cached is not None and cached.version == 4
    assert msgspec.json.decode(cached.doc)["shots"]["s-1"] == {"status": "draft", "camera": {"lens": 50},
                                                               "note": "wide", "id": "s-1", "version": 2}


async def test_the_cache_comes_back_after_redis_restarts_empty(pool: asyncpg.Pool) -> None:
    server = RedisServer()
    server.start()
    client = aioredis.from_url(server.url, socket_timeout=1.0, socket_connect_timeout=0.5)
    cache = DocumentCache(client, prefix="bb:", ttl_seconds=60)
    projector = Projector(NO_LOG, pool, topic=TOPIC, cache=cache)
    part = Partition(TOPIC, 0)
    project_history(part)
    task_history(part)
    try:
        await projector.apply(part.records[:2])
        server.stop()
        during = await projector.apply(part.records[2:4])
        server.start()
        await projector.apply(part.records[4:])
        project, task = await cache.get("project", "p-1"), await cache.get("task", "t-1")
    finally:
        await client.aclose()
        server.stop()

    assert during.applied == 2 and await pool.fetchval("SELECT version FROM projects") == 4
    assert project is None  # lost with the restart, and not written since: absent, never stale
    assert task is not None and task.doc == msgspec.json.encode(task_view(await pool.fetchrow("SELECT * FROM tasks")))


async def test_a_missing_redis_does_not_fail_the_batch(pool: asyncpg.Pool, dead_cache: DocumentCache) -> None:
    part = Partition(TOPIC, 0)
    project_history(part)

    batch = await Projector(NO_LOG, pool, topic=TOPIC, cache=dead_cache).apply(part.records)

    assert batch.applied == 4
    assert await pool.fetchval("SELECT version FROM projects") == 4


# ── following a real log ──────────────────────────────────────────────────────────────


async def test_run_follows_the_log_and_recovers_from_a_lost_database(
    log: PartitionedLog, topic_prefix: str, pool: asyncpg.Pool, pg_url: str
) -> None:
    topic = f"{topic_prefix}events"
    await log.create_topic(topic, 2)
    parts = [Partition(topic, 0), Partition(topic, 1)]
    project_history(parts[0])
    task_history(parts[1])
    await log.append(topic, 0, _as_appended(parts[0]))
    schema = await pool.fetchval("SELECT current_schema()")
    own = await create_pool(pg_url, schema, server_settings={"application_name": "projector-under-test"})
    running = asyncio.create_task(Projector(log, own, topic=topic, batch_size=3).run())
    try:
        await _until(lambda: stored_positions(pool, topic), {0: 4, 1: 0})
        # The projector's connections are cut: its next batch fails, it backs off and resumes.
        await pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'projector-under-test'")
        await log.append(topic, 1, _as_appended(parts[1]))
        await _until(lambda: stored_positions(pool, topic), {0: 4, 1: 2})
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await own.close()
    assert await pool.fetchval("SELECT count(*) FROM change_log") == 6
    assert await pool.fetchval("SELECT status FROM tasks") == "claimed"


def _as_appended(part: Partition) -> list[Record]:
    return [Record(r.key, r.value, r.headers, r.timestamp_ms) for r in part.records]


async def _until(probe: Any, expected: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await probe()) != expected:
        assert time.monotonic() < deadline, f"still {got}, waiting for {expected}"
        await asyncio.sleep(0.05)

