"""``blackboard verify``: the live read models against a fresh rebuild from offset 0, table by table."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Mapping

import asyncpg
import msgspec

from blackboard.events.log import PartitionedLog
from blackboard.ops.checksums import READ_MODELS, TableCheck, compare
from blackboard.ops.offsets import end_offsets, stored_offsets
from blackboard.ops.settings import OpsSettings
from blackboard.projector import generations
from blackboard.projector.migrate import create_pool, migrate, quote_ident
from blackboard.projector.runtime import Projector


class VerifyReport(msgspec.Struct, frozen=True):
    """``targets`` are the end offsets when verify started: the rebuild applied exactly the records below them.

    ``live_offsets`` are the live projection's offsets at the comparison; past a target, rows
    changed by newer events may differ for that reason alone (verify a quiet log for an exact answer).
    """

    equal: bool
    targets: dict[int, int]
    live_offsets: dict[int, int]
    tables: list[TableCheck]


class VerifyTimeout(Exception):
    """The rebuild or the live projection did not reach the target offsets in time."""


async def verify(log: PartitionedLog, pool: asyncpg.Pool, postgres_url: str, settings: OpsSettings,
                 *, timeout: float = 60.0) -> VerifyReport:
    """Rebuild the read models from offset 0 into a temporary schema and compare them with the live ones.

    The temporary schema is dropped at the end, whatever happened.
    """
    deadline = time.monotonic() + timeout
    targets = await end_offsets(log, settings.events_topic)
    schema = f"verify_{uuid.uuid4().hex[:16]}"
    try:
        async with _scratch_pool(postgres_url, schema) as scratch:
            # Its own channel: the live query API's waiters need not wake for the rebuild.
            projector = Projector(log, scratch, topic=settings.events_topic, notify_channel="blackboard_verify")
            await rebuild(log, projector, targets, deadline)
        live = await _wait_live(pool, settings.events_topic, targets, deadline)
        async with pool.acquire() as conn:
            live_schema_ = (await generations.live(conn, settings.read_schema)).schema
            tables = [await compare(conn, t, live_schema_, schema) for t in READ_MODELS]
    finally:
        await asyncio.shield(_drop_schema(pool, schema))
    return VerifyReport(all(t.equal for t in tables), targets, live, tables)


@contextlib.asynccontextmanager
async def _scratch_pool(postgres_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(postgres_url, schema, min_size=1, max_size=2)
    try:
        await migrate(pool, schema)
        yield pool
    finally:
        await pool.close()


async def _drop_schema(pool: asyncpg.Pool, schema: str) -> None:
    await pool.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


async def rebuild(log: PartitionedLog, projector: Projector, targets: Mapping[int, int], deadline: float) -> None:
    """Apply every record of the projector's topic below ``targets`` (per partition), none beyond."""
    reader = log.reader(projector.topic)
    try:
        read = {p: 0 for p in targets}
        for p in (p for p, end in targets.items() if end):
            await reader.seek(p, 0)
        while any(read[p] < end for p, end in targets.items()):
            if time.monotonic() > deadline:
                raise VerifyTimeout(f"the rebuild reached {read}, not {dict(targets)}, in time")
            records = await reader.read(max_records=projector.batch_size, timeout=1.0)
            # Records appended after verify started are left out: both sides stop at the targets.
            await projector.apply([r for r in records if r.offset < targets[r.partition]])
            for r in records:
                read[r.partition] = max(read[r.partition], r.offset + 1)
    finally:
        await reader.close()


async def _wait_live(pool: asyncpg.Pool, topic: str, targets: Mapping[int, int], deadline: float) -> dict[int, int]:
    """The live projection's offsets once every one has reached its target."""
    while True:
        live = await stored_offsets(pool, topic)
        if all(live.get(p, 0) >= end for p, end in targets.items()):
            return live
        if time.monotonic() > deadline:
            raise VerifyTimeout(f"the live projection is at {live}, not at {dict(targets)}; is it running?")
        await asyncio.sleep(0.2)
