"""A rebuild's catch-up shared among worker processes, each folding a group of partitions of its own."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess

import structlog

from blackboard.events.collector import bulk_gc
from blackboard.events.log import PartitionedLog
from blackboard.projector.follower import PROJECTION, Follower
from blackboard.projector.migrate import create_pool
from blackboard.projector.runtime import AppliedBatch, Projector

logger = structlog.get_logger(__name__)

#: Below this many records to catch up, one process folds them all: starting workers would cost more.
PARALLEL_FROM = 100_000
#: How often the progress of worker processes is read from the new generation's offsets.
POLL_SECONDS = 0.25

#: Opens (without starting) the log a rebuild reads; it must pickle, for the worker processes.
LogFactory = Callable[[], PartitionedLog]


def worker_partitions(targets: Mapping[int, int], workers: int | None) -> list[frozenset[int]]:
    """The partitions each worker process folds: the largest backlogs spread first, so the shares come out even.

    One group (no worker processes) below ``PARALLEL_FROM`` records or when one worker is asked for.
    """
    count = workers if workers is not None else (os.cpu_count() or 1)
    count = max(1, min(count, sum(1 for end in targets.values() if end > 0)))
    if count == 1 or (workers is None and sum(targets.values()) < PARALLEL_FROM):
        return [frozenset(targets)]
    shares: list[tuple[int, set[int]]] = [(0, set()) for _ in range(count)]
    for partition, end in sorted(targets.items(), key=lambda item: -item[1]):
        load, members = min(shares, key=lambda share: share[0])
        shares.remove((load, members))
        members.add(partition)
        shares.append((load + end, members))
    return [frozenset(members) for _, members in shares if members]


async def catch_up_in_workers(open_log: LogFactory, setup: Callable[[], None] | None, postgres_url: str,
                              schema: str, topic: str,
                              groups: list[frozenset[int]], targets: Mapping[int, int], batch_size: int,
                              projector: Projector, report: Callable[[dict[int, int]], None]) -> AppliedBatch:
    """Fold each group of partitions up to ``targets`` in a process of its own; ``report`` the positions of
    ``projector`` (the generation's offsets) meanwhile.

    Note: the workers are spawned, not forked (a fork would copy this process's event loop and
    connections). Progress is read from the generation's offsets, which each worker commits with
    every batch. A failing worker stops them all; so does a cancellation (Ctrl-C), and nothing
    of the live generation is touched either way.
    """
    context = multiprocessing.get_context("spawn")
    running: list[tuple[SpawnProcess, Connection]] = []
    try:
        for group in groups:
            receive, send = context.Pipe(duplex=False)
            worker = context.Process(
                target=_worker_main, name=f"blackboard-replay-{min(group)}", daemon=True,
                args=(open_log, setup, postgres_url, schema, topic, sorted(group),
                      {p: targets[p] for p in group}, batch_size, send))
            worker.start()
            send.close()
            running.append((worker, receive))
        logger.info("replay.workers", workers=len(running), partitions=[sorted(g) for g in groups])
        outcomes: dict[int, AppliedBatch] = {}
        while len(outcomes) < len(running):
            await asyncio.sleep(POLL_SECONDS)
            report(await projector.positions())
            for index, (worker, receive) in enumerate(running):
                if index in outcomes:
                    continue
                # Polled again after the exit: a worker may send its outcome and end between two looks.
                if receive.poll() or (not worker.is_alive() and receive.poll()):
                    outcome = receive.recv()
                    if not isinstance(outcome, AppliedBatch):
                        raise RuntimeError(f"replay worker {worker.name} failed: {outcome}")
                    outcomes[index] = outcome
                elif not worker.is_alive():
                    raise RuntimeError(f"replay worker {worker.name} exited with code {worker.exitcode}")
        total = AppliedBatch()
        for outcome in outcomes.values():
            total = total + outcome
        return total
    finally:
        for worker, _ in running:
            if worker.is_alive():
                worker.terminate()
        for worker, _ in running:
            await asyncio.to_thread(worker.join, 5.0)


def _worker_main(open_log: LogFactory, setup: Callable[[], None] | None, postgres_url: str, schema: str, topic: str,
                 partitions: list[int], targets: dict[int, int], batch_size: int, send: Connection) -> None:
    """A worker process: fold ``partitions`` up to ``targets``, then send what it applied (or why it failed)."""
    try:
        if setup is not None:
            setup()
        else:  # stdout is the command's output (a report, JSON): a worker's logs go to stderr
            structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
        with bulk_gc():
            outcome: AppliedBatch | str = asyncio.run(
                _worker_catch_up(open_log, postgres_url, schema, topic, partitions, targets, batch_size))
    except KeyboardInterrupt:
        outcome = "interrupted"
    except BaseException as exc:  # sent to the coordinator, which raises it there
        outcome = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(OSError):
        send.send(outcome)
    send.close()


async def _worker_catch_up(open_log: LogFactory, postgres_url: str, schema: str, topic: str, partitions: list[int],
                           targets: dict[int, int], batch_size: int) -> AppliedBatch:
    log = open_log()
    await log.start()
    try:
        pool = await create_pool(postgres_url, schema, min_size=1, max_size=2)
        try:
            projector = Projector(log, pool, topic=topic, projection=PROJECTION, batch_size=batch_size,
                                  notify_channel=None)
            follower = Follower(log, projector, frozenset(partitions))
            await follower.start()
            try:
                await follower.until(targets)
            finally:
                await follower.close()
            return follower.applied
        finally:
            await pool.close()
    finally:
        await log.close()
