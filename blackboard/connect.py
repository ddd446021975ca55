"""What the operator commands open from the settings: the log, a pool on the live read models, a rebuild's workers.

The operator tools (``blackboard.ops``) take these opened; the wiring chooses and opens them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import asyncpg

from blackboard.config import Settings
from blackboard.events.log import PartitionedLog
from blackboard.ops import dead_letters
from blackboard.ops import dry_run as dry_running
from blackboard.projector import generations
from blackboard.projector.dead_letters import Resolution
from blackboard.projector.migrate import create_pool


@contextlib.asynccontextmanager
async def opened_log(settings: Settings, postgres_url: str) -> AsyncIterator[PartitionedLog]:
    """The started log the settings select, closed on exit."""
    from blackboard.app import open_log

    log = open_log(settings, postgres_url)
    await log.start()
    try:
        yield log
    finally:
        await log.close()


def log_factory(settings: Settings, postgres_url: str) -> Callable[[], PartitionedLog]:
    """Opens the log the settings select, in any process: it pickles, for a rebuild's worker processes."""
    from blackboard.app import open_log

    return functools.partial(open_log, settings, postgres_url)


def quiet_logging() -> None:
    """Logging as the CLI sets it (warnings and worse, JSON lines on stderr): a rebuild's workers start with it."""
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)


async def live_schema(settings: Settings, postgres_url: str) -> str:
    """The schema of the live generation of the read models (see ``blackboard.projector.generations``)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        return (await generations.live(conn, settings.read_schema)).schema
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def read_pool(settings: Settings, postgres_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the live read-model schema, closed on exit."""
    pool = await create_pool(postgres_url, await live_schema(settings, postgres_url), min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def resolve_dead_letter(settings: Settings, postgres_url: str, id_: int, *, skip: bool,
                              operator: str = "operator", reason: str = "") -> Resolution:
    """``ops.dead_letters.resolve_dead_letter`` on the log and the live read models the settings select."""
    async with opened_log(settings, postgres_url) as log, read_pool(settings, postgres_url) as pool:
        return await dead_letters.resolve_dead_letter(log, pool, settings, id_, skip=skip, operator=operator,
                                                      reason=reason)


async def dry_run(log: PartitionedLog, settings: Settings, postgres_url: str, *, batch_size: int = 10_000,
                  workers: int | None = None) -> dry_running.DryRunReport:
    """``ops.dry_run.dry_run`` whose worker processes open the log the settings select and log as the CLI."""
    return await dry_running.dry_run(log, settings, postgres_url, open_log=log_factory(settings, postgres_url),
                                     worker_setup=quiet_logging, batch_size=batch_size, workers=workers)
