"""Rebuilds under load with an atomic swap, and dead letters that hold their stream back until a retry or skip."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from blackboard.app import open_log
from blackboard.config import Settings
from blackboard.connect import dry_run, read_pool, resolve_dead_letter
from blackboard.events.codec import to_record
from blackboard.events.log import PartitionedLog
from blackboard.events.partitioner import partition_for
from blackboard.ops.dead_letters import DeadLetter, dead_letters
from blackboard.ops.verify import verify
from blackboard.projector import generations
from blackboard.projector.dead_letters import DeadLetterError
from blackboard.projector.replay import replay
from blackboard.schemas import registry
from blackboard.schemas.envelope import stream_partition_key
from blackboard.schemas.project import CostAdded
from tests.factories import envelope
from tests.integration.harness import command, running, settings_for


@contextlib.asynccontextmanager
async def started_log(settings: Settings) -> AsyncIterator[PartitionedLog]:
    assert settings.postgres_url is not None
    log = open_log(settings, settings.postgres_url.get_secret_value())
    await log.start()
    try:
        yield log
    finally:
        await log.close()


async def create_project(client: httpx.AsyncClient, pid: str, budget: str = "1000000") -> str:
    r = await command(client, "project.create", f"project:{pid}",
                      {"title": pid, "currency": "EUR", "budget_total": budget})
    assert r.status_code == 200, r.text
    return str(r.json()["position"])


async def add_cost(client: httpx.AsyncClient, pid: str, amount: str = "1") -> httpx.Response:
    return await command(client, "project.add_cost", f"project:{pid}", {"amount": amount, "reason": "render"})


async def live_number(url: str, base: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return (await generations.live(conn, base)).number
    finally:
        await conn.close()


# ── rebuild and swap ────────────────────────────────────────────────────────────────────


async def test_a_rebuild_under_load_swaps_without_a_read_error_and_verifies_equal(settings: Settings) -> None:
    assert settings.postgres_url is not None
    url = settings.postgres_url.get_secret_value()
    projects = [f"p-{i}" for i in range(6)]
    async with running(settings) as (client, runtime):
        for pid in projects:
            await create_project(client, pid)
        for i in range(60):
            assert (await add_cost(client, projects[i % len(projects)])).status_code == 200
        for pid in projects:  # the reads below carry no token: start them once the read models hold every project
            r = await add_cost(client, pid)
            seen_now = await client.get(f"/v1/projects/{pid}", params={"consistent_with": r.json()["position"]})
            assert seen_now.status_code == 200, seen_now.text
        stop = asyncio.Event()
        seen: dict[str, int] = {}
        reads, problems = 0, []

        async def write() -> None:
            i = 0
            while not stop.is_set():
                r = await add_cost(client, projects[i % len(projects)])
                if r.status_code != 200:
                    problems.append(f"write {r.status_code} {r.text}")
                i += 1

        async def read(pid: str) -> None:
            nonlocal reads
            while not stop.is_set():
                r = await client.get(f"/v1/projects/{pid}")
                reads += 1
                if r.status_code != 200:
                    problems.append(f"read {pid}: {r.status_code} {r.text}")
                    continue
                version = r.json()["version"]
                # Never a half-built schema, never a step back across the swap.
                if version < seen.get(pid, 0):
                    problems.append(f"read {pid}: version {version} after {seen[pid]}")
                seen[pid] = version
                await asyncio.sleep(0)

        load = [asyncio.create_task(write()), *(asyncio.create_task(read(p)) for p in projects)]
        try:
            async with started_log(settings) as log:
                report = await replay(log, url, base=settings.read_schema, topic=settings.events_topic,
                                      batch_size=50, handover_seconds=1.0)
            assert report.swapped and report.generation == 1 and report.dead_letters == 0
            # The running process follows the swap (LISTEN, or its 1 s poll), after a catch-up bounded by
            # SWITCH_SECONDS: allow for that and more on a loaded machine.
            for _ in range(600):
                if runtime.generation is not None and runtime.generation.number == 1:
                    break
                await asyncio.sleep(0.05)
            assert runtime.generation is not None and runtime.generation.number == 1
            await asyncio.sleep(0.5)  # reads and writes go on against the new generation
        finally:
            stop.set()
            await asyncio.gather(*load)
        assert problems == [] and reads > 0

        # The reads come from the new schema and the new Redis namespace.
        r = await add_cost(client, projects[0])
        doc = (await client.get(f"/v1/projects/{projects[0]}", params={"consistent_with": r.json()["position"]}))
        assert doc.status_code == 200
        assert settings.redis_url is not None
        redis = aioredis.from_url(settings.redis_url.get_secret_value())
        try:
            prefix = generations.cache_prefix(settings.redis_prefix, 1)
            assert await redis.exists(f"{prefix}project:{projects[0]}")
        finally:
            await redis.aclose()

        async with started_log(settings) as log, read_pool(settings, url) as pool:
            verified = await verify(log, pool, url, settings, timeout=60)
        assert verified.equal, verified
        conn = await asyncpg.connect(url)
        try:
            states = {g.number: g.state for g in await generations.listing(conn, settings.read_schema)}
            assert states == {0: "retired", 1: "live"}
            dropped = await generations.drop(conn, settings.read_schema)
            assert [g.schema for g in dropped] == [settings.read_schema]
            assert not await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1",
                                           settings.read_schema)
        finally:
            await conn.close()
        # Still serving after the old generation is gone.
        assert (await client.get(f"/v1/projects/{projects[1]}")).status_code == 200


async def test_an_interrupted_rebuild_leaves_the_live_schema_untouched(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings, roles=frozenset({"command", "projector"})) as (client, _):
        await create_project(client, "p-1")
        for _ in range(200):
            assert (await add_cost(client, "p-1")).status_code == 200
        async with started_log(settings) as log:
            under_way = asyncio.Event()
            slow = asyncio.create_task(replay(log, pg_url, base=settings.read_schema, topic=settings.events_topic,
                                              batch_size=1, on_progress=lambda _: under_way.set()))
            await asyncio.wait_for(under_way.wait(), 30)  # one record of 201 applied
            # Two rebuilds of one base never run at once.
            with pytest.raises(generations.GenerationError, match="already running"):
                await replay(log, pg_url, base=settings.read_schema, topic=settings.events_topic)
            slow.cancel()  # what Ctrl-C does to the command
            with pytest.raises(asyncio.CancelledError):
                await slow
    conn = await asyncpg.connect(pg_url)
    try:
        states = {g.number: g.state for g in await generations.listing(conn, settings.read_schema)}
        assert states == {0: "live", 1: "abandoned"}
        assert await conn.fetchval(f"SELECT version FROM {settings.read_schema}.projects WHERE id = 'p-1'") == 201
        dropped = await generations.drop(conn, settings.read_schema)
        assert [g.schema for g in dropped] == [generations.schema_of(settings.read_schema, 1)]
        assert await live_number(pg_url, settings.read_schema) == 0
    finally:
        await conn.close()


# ── dead letters: hold back, retry, skip ────────────────────────────────────────────────


async def produce(log: PartitionedLog, topic: str, partitions: int, env: Any) -> None:
    """Write an event record straight into the events topic, as any producer could."""
    partition = partition_for(env.partition_key.encode(), partitions)
    await log.append(topic, partition, [to_record(env)])


async def letters(settings: Settings, url: str) -> list[DeadLetter]:
    async with read_pool(settings, url) as pool:
        return (await dead_letters(pool, limit=100)).dead_letters[::-1]


async def test_a_poison_event_holds_its_stream_until_retried_after_the_fix(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.postgres_url is not None
    url = settings.postgres_url.get_secret_value()
    async with running(settings) as (client, runtime), started_log(settings) as log:
        await create_project(client, "p-1")
        await create_project(client, "p-2")
        # A producer with a newer build writes cost_added schema version 2, which this build does not know.
        future = envelope(CostAdded(Decimal(5), "render"), stream="project:p-1", version=2, schema_version=2,
                          partition_key=stream_partition_key("project:p-1"))
        await produce(log, settings.events_topic, runtime.partitions, future)
        later = envelope(CostAdded(Decimal(7), "render"), stream="project:p-1", version=3,
                         partition_key=stream_partition_key("project:p-1"))
        await produce(log, settings.events_topic, runtime.partitions, later)
        # Other streams go on. (On Kafka the owner finds the foreign records after its append and
        # answers 503; the retry with the same command_id is answered from the restored log.)
        for _ in range(3):
            answer = await command(client, "project.add_cost", "project:p-2", {"amount": "3", "reason": "render"},
                                   command_id="cost-p-2")
            if answer.status_code == 200:
                break
        position = answer.json()["position"]
        p2 = await client.get("/v1/projects/p-2", params={"consistent_with": position})
        assert p2.json()["budget"]["spent"] in ("3", "3.0", "3.00")
        for _ in range(100):
            found = await letters(settings, url)
            if len(found) == 2:
                break
            await asyncio.sleep(0.05)
        first, held = found
        assert (first.status, held.status) == ("open", "held")
        assert "schema_version 2 is not in 1..1" in first.reason and first.stream == "project:p-1"
        assert "held behind" in held.reason
        assert (await client.get("/v1/projects/p-1")).json()["version"] == 1
        if settings.kafka_bootstrap_servers is None:
            # The command side learns of the foreign records at its next append (the offset fences)
            # and refuses to decide on the hole rather than write a second version 2.
            refused = await add_cost(client, "p-1", "1")
            assert refused.status_code == 503 and refused.json()["code"] == "stream_unreadable", refused.text

        # Retrying the held one first is refused; retrying before the fix fails again and keeps the order.
        with pytest.raises(DeadLetterError, match=f"held behind dead letter {first.id}"):
            await resolve_dead_letter(settings, url, held.id, skip=False)
        again = await resolve_dead_letter(settings, url, first.id, skip=False)
        assert (again.open, again.held, again.applied) == ([first.id], [held.id], [])

        # The fix: this build learns version 2 (unchanged fields, so the upcaster is the identity).
        monkeypatch.setitem(registry.EVENT_TYPES, "project.cost_added", (CostAdded, 2))
        monkeypatch.setitem(registry.UPCASTERS, ("project.cost_added", 1), lambda obj: obj)
        done = await resolve_dead_letter(settings, url, first.id, skip=False)
        assert (done.applied, done.open, done.held) == ([first.id, held.id], [], [])
        p1 = (await client.get("/v1/projects/p-1")).json()
        assert p1["version"] == 3 and p1["budget"]["spent"] in ("12", "12.0", "12.00")
        assert [d.status for d in await letters(settings, url)] == ["applied", "applied"]
        with pytest.raises(DeadLetterError, match="already applied"):
            await resolve_dead_letter(settings, url, first.id, skip=False)

    # The fixed build restores the partition, reads the stream whole, and the stream moves on.
    async with running(settings) as (client, _):
        answer = await add_cost(client, "p-1", "1")
        p1 = (await client.get("/v1/projects/p-1", params={"consistent_with": answer.json()["position"]})).json()
        assert p1["version"] == 4, (answer.json(), await letters(settings, url))


async def test_skipping_a_dead_letter_releases_the_events_behind_it(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings) as (client, runtime), started_log(settings) as log:
        await create_project(client, "p-1")
        broken = envelope(CostAdded(Decimal(5), "render"), stream="project:p-1", version=2,
                          partition_key=stream_partition_key("project:p-1"))
        broken = msgspec.structs.replace(broken, payload=b'{"amount": "not money"}')
        await produce(log, settings.events_topic, runtime.partitions, broken)
        for version, amount in ((3, 7), (4, 1)):
            env = envelope(CostAdded(Decimal(amount), "render"), stream="project:p-1", version=version,
                           partition_key=stream_partition_key("project:p-1"))
            await produce(log, settings.events_topic, runtime.partitions, env)
        for _ in range(100):
            found = await letters(settings, pg_url)
            if len(found) == 3:
                break
            await asyncio.sleep(0.05)
        assert [d.status for d in found] == ["open", "held", "held"]
        outcome = await resolve_dead_letter(settings, pg_url, found[0].id, skip=True)
        assert (outcome.skipped, outcome.applied) == ([found[0].id], [found[1].id, found[2].id])
        p1 = (await client.get("/v1/projects/p-1")).json()
        assert p1["version"] == 4 and p1["budget"]["spent"] in ("8", "8.0", "8.00")
        assert [d.status for d in await letters(settings, pg_url)] == ["skipped", "applied", "applied"]


async def test_a_dry_run_compares_a_fresh_fold_with_the_live_models_and_leaves_nothing(
        pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings) as (client, _):
        await create_project(client, "p-1")
        for _ in range(20):
            position = (await add_cost(client, "p-1")).json()["position"]
        assert (await client.get("/v1/projects/p-1", params={"consistent_with": position})).status_code == 200
        async with started_log(settings) as log:
            report = await dry_run(log, settings, pg_url, batch_size=7)
            assert report.equal and report.records == 21 and report.applied == 21 and report.dead_letters == 0
            # The live models changed behind its back: the dry run names the row that differs.
            conn = await asyncpg.connect(pg_url)
            try:
                await conn.execute(f"UPDATE {settings.read_schema}.projects SET title = 'edited' WHERE id = 'p-1'")
                report = await dry_run(log, settings, pg_url)
                assert not report.equal
                assert {t.table: t.differing_keys for t in report.tables}["projects"] == [["p-1"]]
                states = {g.number: g.state for g in await generations.listing(conn, settings.read_schema)}
                assert states == {0: "live"}
                left = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1",
                                           f"{settings.read_schema}_g%")
                assert left == 0
            finally:
                await conn.close()
