"""A poison record at every position of a projector batch (first, middle, last, all of it), of each kind (bytes
that do not decode, an event PostgreSQL refuses): it is set aside with its reason and position, everything else
applies, the stream behind it is held, and a replay cut into other batches sets aside the same and builds the same
read models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import asyncpg
import msgspec
import pytest

from blackboard.events.codec import to_record
from blackboard.events.log import PartitionedLog, StoredRecord
from blackboard.ops.checksums import checksums
from blackboard.projector.migrate import create_pool, migrate
from blackboard.projector.runtime import Projector
from blackboard.schemas.project import CostAdded, ProjectCreated
from tests.conftest import _with_database
from tests.factories import Partition, envelope

TOPIC = "events"
SIZE = 9
NO_LOG: PartitionedLog = None  # type: ignore[assignment]  # ``apply`` never reads the log
POSITIONS = {"first": [0], "middle": [SIZE // 2], "last": [SIZE - 1], "all": list(range(SIZE))}


def _undecodable(part: Partition, stream: str) -> None:
    created = envelope(ProjectCreated("T", "EUR", Decimal(10), {}), stream=stream, version=1)
    part.add(to_record(msgspec.structs.replace(created, payload=b"\xff{not json")))


def _refused_by_postgresql(part: Partition, stream: str) -> None:
    part.event(ProjectCreated("nul\x00title", "EUR", Decimal(10), {}), stream=stream, version=1)


KINDS: dict[str, tuple[Callable[[Partition, str], None], str]] = {
    "undecodable": (_undecodable, "undecodable"),
    "refused": (_refused_by_postgresql, "rejected by the read model"),
}


@pytest.fixture(scope="module")
async def schemas(postgres_server_url: str) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    """The live schema and a replay's, migrated once for the module in a database of its own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    made = []
    try:
        for schema in ("live", "replay"):
            pool = await create_pool(_with_database(postgres_server_url, name), schema, min_size=1, max_size=2)
            made.append(pool)
            await migrate(pool, schema)
        yield made[0], made[1]
    finally:
        for pool in made:
            await pool.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def pools(schemas: tuple[asyncpg.Pool, asyncpg.Pool]) -> tuple[asyncpg.Pool, asyncpg.Pool]:
    """Both schemas emptied: every table but the record of the migrations (cheaper than migrating anew)."""
    for pool, schema in zip(schemas, ("live", "replay"), strict=True):
        tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1 "
                                  "AND tablename <> 'schema_migrations'", schema)
        names = ", ".join(f'"{schema}"."{t["tablename"]}"' for t in tables)
        await pool.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    return schemas


def _batch(kind: str, poisoned: list[int]) -> list[StoredRecord]:
    """``SIZE`` projects created, each on a stream of its own, the ``poisoned`` positions poison of ``kind``."""
    part = Partition(TOPIC, 0)
    for i in range(SIZE):
        if i in poisoned:
            KINDS[kind][0](part, f"project:p-{i}")
        else:
            part.event(ProjectCreated(f"P{i}", "EUR", Decimal(10), {}), stream=f"project:p-{i}", version=1)
    return part.records


def _after(poisoned: list[int]) -> list[StoredRecord]:
    """The next batch: a cost on every stream, and a new project. A poisoned stream's cost is held behind it."""
    part = Partition(TOPIC, 0, start=SIZE)
    for i in range(SIZE):
        part.event(CostAdded(Decimal(1), "after"), stream=f"project:p-{i}", version=2)
    part.event(ProjectCreated("new", "EUR", Decimal(1), {}), stream="project:new", version=1)
    return part.records


async def _dead_letters(pool: asyncpg.Pool) -> dict[int, str]:
    rows = await pool.fetch('SELECT "offset", reason FROM dead_letters ORDER BY "offset"')
    return {r["offset"]: r["reason"] for r in rows}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("where", list(POSITIONS))
async def test_poison_anywhere_in_a_batch_is_set_aside_and_the_rest_goes_on(
        pools: tuple[asyncpg.Pool, asyncpg.Pool], kind: str, where: str) -> None:
    live, replay = pools
    poisoned = POSITIONS[where]
    first, then = _batch(kind, poisoned), _after(poisoned)

    batch = await Projector(NO_LOG, live, topic=TOPIC).apply(first)
    assert (batch.applied, batch.dead_letters, batch.positions) == (SIZE - len(poisoned), len(poisoned), {0: SIZE})
    got = await _dead_letters(live)
    assert sorted(got) == poisoned
    assert all(KINDS[kind][1] in reason for reason in got.values()), got
    assert await live.fetchval("SELECT count(*) FROM projects") == SIZE - len(poisoned)

    # Everything else goes on: the next batch applies to every healthy stream; a poisoned one holds its later events.
    batch = await Projector(NO_LOG, live, topic=TOPIC).apply(then)
    assert (batch.applied, batch.dead_letters) == (SIZE - len(poisoned) + 1, len(poisoned))
    got = await _dead_letters(live)
    assert sorted(got) == poisoned + [SIZE + i for i in poisoned]
    assert all("held behind an unresolved dead letter" in got[SIZE + i] for i in poisoned)
    spent = await live.fetch("SELECT id, spent FROM projects ORDER BY id")
    assert {r["id"]: r["spent"] for r in spent} == {
        **{f"p-{i}": Decimal(1) for i in range(SIZE) if i not in poisoned}, "new": Decimal(0)}
    assert await live.fetchval("SELECT next_offset FROM projection_offsets WHERE partition = 0") == 2 * SIZE + 1

    # A replay of the same log cut into one-record batches sets aside the same records and builds the same rows.
    projector = Projector(NO_LOG, replay, topic=TOPIC)
    for rec in first + then:
        await projector.apply([rec])
    assert await _dead_letters(replay) == got
    assert await checksums(replay, "replay") == await checksums(live, "live")
