"""``blackboard replay dry-run``: a rebuild with today's code compared with the live read models, then dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import msgspec

from blackboard.events.log import PartitionedLog
from blackboard.ops.checksums import READ_MODELS, TableCheck, compare
from blackboard.ops.settings import OpsSettings
from blackboard.projector import generations
from blackboard.projector.replay import LogFactory, replay


class DryRunReport(msgspec.Struct, frozen=True):
    """What today's projection code makes of the whole log, beside what the live read models hold.

    ``dead_letters`` are the records it would set aside; ``tables`` compare it with the live
    generation (on a log that moved meanwhile, rows changed since differ for that reason alone).
    """

    records: int
    applied: int
    dead_letters: int
    seconds: float
    equal: bool
    tables: list[TableCheck]


async def dry_run(log: PartitionedLog, settings: OpsSettings, postgres_url: str, *, open_log: LogFactory,
                  worker_setup: Callable[[], None] | None = None, batch_size: int = 10_000,
                  workers: int | None = None) -> DryRunReport:
    """Fold the whole log with today's code into a scratch generation, compare it, and drop it.

    ``open_log`` and ``worker_setup`` are the rebuild's, for its worker processes (see
    ``blackboard.projector.replay.replay``). Nothing the live read models, the cache or the running
    processes see is written.
    """
    report = await replay(log, postgres_url, base=settings.read_schema, topic=settings.events_topic,
                          batch_size=batch_size, swap=False, open_log=open_log,
                          workers=workers, worker_setup=worker_setup)
    conn = await asyncpg.connect(postgres_url)
    try:
        live = await generations.live(conn, settings.read_schema)
        tables = [await compare(conn, t, live.schema, report.schema) for t in READ_MODELS]
    finally:
        try:
            await asyncio.shield(generations.drop_one(conn, settings.read_schema, report.generation))
        finally:
            await conn.close()
    return DryRunReport(report.records, report.applied, report.dead_letters, report.seconds,
                        all(t.equal for t in tables), tables)
