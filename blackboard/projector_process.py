"""The projector in a child process of its own, beside the process that serves HTTP and decides.

Why: in one process the projector (decoding the log, folding, writing PostgreSQL and Redis) took
the request loop's time on the core that serves the commands, while a second core stood half idle.
A child process projects on its own core; it is the same ``Projector`` with the same stored offsets,
so exactly-once projection is unchanged, and a child that dies is started again from those offsets.

The child stops with its parent: on SIGTERM or SIGINT (a terminal's Ctrl-C reaches both), and when
the parent is killed it is killed too (Linux; elsewhere it stops by itself within a second). Its metrics (the
projector's lag, batches and applied events) are asked for over a pipe at every scrape of the
parent's ``/metrics``, so one endpoint still shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING

import structlog
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from blackboard.config import Settings

log = structlog.get_logger(__name__)

#: The child's metric families the parent shows (the rest, process and Python ones, are the parent's own).
CHILD_METRICS = ("blackboard_projector", "blackboard_cache_write")
#: Longest wait of a scrape for the child's metrics; without an answer the scrape shows the parent's only.
SCRAPE_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1
#: How often the child looks whether its parent is still there, and the parent whether the child is.
WATCH_SECONDS = 1.0


class ChildMetrics(Collector):
    """The projector child's metric families, asked for over ``pipe`` at each collection."""

    def __init__(self, pipe: Connection) -> None:
        self.pipe = pipe
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering must not wait for the child (the registry collects what has no description)."""
        return []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            try:
                while self.pipe.poll():  # an answer that came after its scrape gave up: not this scrape's
                    self.pipe.recv_bytes()
                self.pipe.send_bytes(b"?")
                if not self.pipe.poll(SCRAPE_SECONDS):
                    return []
                text = self.pipe.recv_bytes().decode()
            except (OSError, EOFError):
                return []
        return [f for f in text_string_to_metric_families(text) if f.name.startswith(CHILD_METRICS)]


class ProjectorProcess:
    """Starts, watches (restarts when it dies) and stops the projector's child process."""

    def __init__(self, settings: Settings, postgres_url: str) -> None:
        self.settings, self.postgres_url = settings, postgres_url
        self.process: BaseProcess | None = None
        self.projecting: Event | None = None
        self.restarts = 0
        self._collector: ChildMetrics | None = None
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name="projector-process")

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop or sockets
        ours, theirs = context.Pipe()
        self.projecting = context.Event()
        self.process = context.Process(target=child_main, name="blackboard-projector", daemon=True,
                                       args=(self.settings, self.postgres_url, os.getpid(), theirs, self.projecting))
        self.process.start()
        theirs.close()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
        self._collector = ChildMetrics(ours)
        REGISTRY.register(self._collector)
        log.info("projector_process.started", pid=self.process.pid)

    async def wait_projecting(self, seconds: float) -> bool:
        """Wait until the child has started its projector (up to ``seconds``); whether it has."""
        assert self.projecting is not None, "start() first"
        return await asyncio.to_thread(self.projecting.wait, seconds)

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if self.process is not None and not self.process.is_alive():
                self.restarts += 1
                log.error("projector_process.died", exitcode=self.process.exitcode, restarts=self.restarts)
                self._spawn()

    async def stop(self, seconds: float) -> None:
        """Ask the child to stop (SIGTERM), wait up to ``seconds``, then kill it."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
        process = self.process
        if process is None or not process.is_alive():
            return
        process.terminate()
        await asyncio.to_thread(process.join, seconds)
        if process.is_alive():
            log.warning("projector_process.killed", pid=process.pid)
            process.kill()
            await asyncio.to_thread(process.join, seconds)


def child_main(settings: Settings, postgres_url: str, parent: int, pipe: Connection, projecting: Event) -> None:
    """The child: the projector role alone, until SIGTERM or SIGINT, or until the parent is gone."""
    _die_with(parent)
    from blackboard.logs import configure_logging
    from blackboard.tracing import configure_tracing

    configure_logging()
    configure_tracing()
    threading.Thread(target=_answer_scrapes, args=(pipe,), name="metrics-pipe", daemon=True).start()
    run = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    run(_project(settings, postgres_url, parent, projecting))


def _die_with(parent: int) -> None:
    """On Linux, be killed with the parent (``PR_SET_PDEATHSIG``): a parent killed -9 leaves no projector behind,
    as when the projector was a task of the parent. Elsewhere the child notices within ``WATCH_SECONDS``."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def _answer_scrapes(pipe: Connection) -> None:
    with contextlib.suppress(OSError, EOFError):
        while True:
            pipe.recv_bytes()
            pipe.send_bytes(generate_latest(REGISTRY))


async def _project(settings: Settings, postgres_url: str, parent: int, projecting: Event) -> None:
    from blackboard.app import Runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime = Runtime(settings, postgres_url, roles=frozenset({"projector"}))
    # Started after the parent's start, which waited for the dependencies (a failure here: the parent restarts us).
    await runtime.start()
    projecting.set()
    try:
        while not stop.is_set() and os.getppid() == parent:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_SECONDS)
    finally:
        await runtime.stop()
