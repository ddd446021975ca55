"""``blackboard bench --suite restore``: how long a partition owner takes to restore, with and without snapshots.

One partition of a fresh events topic is seeded with ``events`` events: ``streams`` projects
created first, then ``project.cost_added`` events spread over them, each its own command, written
as the owner writes them (envelopes, fenced records, large batches within the log's batch limit).
Measured, each the median of ``runs``:

(a) ``restore_owner`` from offset 0 (no snapshot): every event read, decoded and folded;
(b) a snapshot taken and written at the end, then ``restore_owner`` from it (an empty tail);
(c) a snapshot taken at 90% of the log, then ``restore_owner`` from it and the 10% tail.

The log is the PostgreSQL engine on an embedded PostgreSQL, or Kafka when
``BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS`` is set (topics get a fresh prefix).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from benchmarks.server import cpu_seconds, postmaster_pid, thread_times
from blackboard.command_api.known import MAX_COMMANDS as KNOWN_WINDOW
from blackboard.command_api.owner import PartitionOwner
from blackboard.command_api.restore import restore_owner
from blackboard.command_api.snapshots import SNAPSHOT_TOPIC_CONFIG, take_snapshot, write_snapshot
from blackboard.config import Settings
from blackboard.events.codec import fenced, to_record
from blackboard.events.kafka import MAX_BATCH_BYTES
from blackboard.events.log import PartitionedLog, Record
from blackboard.schemas.envelope import Envelope, stream_partition_key
from blackboard.schemas.project import CostAdded, ProjectCreated
from blackboard.schemas.registry import encode_payload, event_name, schema_version_of

console = Console(width=160)
PARTITION = 0
#: Records per append at most; the byte limit of a batch usually ends it first.
BATCH_RECORDS = 5000


class Measure(msgspec.Struct, frozen=True):
    """One way of restoring: the events it replayed, the snapshot it started from, each run's seconds."""

    label: str
    events: int
    snapshot_bytes: int
    seconds: list[float]
    #: Each run's CPU: µs per event covered of this process and of PostgreSQL (when it is the log), and the
    #: restoring thread's shares of the wall time on a CPU and waiting for one (near 100 % in all: the limit).
    usage: list[dict[str, float]] = []

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class RestoreBench(msgspec.Struct, frozen=True):
    engine: str
    events: int
    streams: int
    seed_seconds: float
    measures: list[Measure]


class Topics(msgspec.Struct, frozen=True):
    events: str
    results: str
    snapshots_end: str
    snapshots_90: str


class Seeder:
    """Appends project events to one partition as an owner would: create every stream, then costs."""

    def __init__(self, log: PartitionedLog, topic: str, streams: int) -> None:
        self.log, self.topic, self.streams = log, topic, streams
        self.versions: dict[str, int] = {}
        self.written = 0
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def _next(self) -> Record:
        i = self.written
        if i < self.streams:
            stream = f"project:p-{i}"
            event: msgspec.Struct = ProjectCreated(f"Project {i}", "EUR", Decimal(10_000_000),
                                                   {"style": "noir", "format": "16:9", "fps": 24})
        else:
            stream = f"project:p-{i % self.streams}"
            event = CostAdded(Decimal(f"{(i % 997) + 1}.25"), f"render of shot s-{i % 40}", f"a-{i}")
        version = self.versions.get(stream, 0) + 1
        self.versions[stream] = version
        self.written += 1
        name = event_name(event)
        command_id = str(uuid.uuid4())
        env = Envelope(
            event_id=str(uuid.uuid4()), stream=stream, stream_version=version, type=name,
            schema_version=schema_version_of(name), occurred_at=self.at + timedelta(milliseconds=i),
            command_id=command_id, correlation_id=command_id, causation_id=command_id, actor="bench",
            writer_epoch=1, partition_key=stream_partition_key(stream), payload=encode_payload(event),
            command_hash=command_id[:16])
        return to_record(env)

    async def write(self, count: int) -> None:
        """Append ``count`` more events in batches under the log's batch byte limit."""
        left = count
        while left:
            batch: list[Record] = []
            size = 0
            while left and len(batch) < BATCH_RECORDS and size < MAX_BATCH_BYTES // 2:
                rec = self._next()
                batch.append(rec)
                size += len(rec.key or b"") + len(rec.value or b"") + sum(len(k) + len(v) for k, v in rec.headers)
                left -= 1
            end = await self.log.end_offset(self.topic, PARTITION)
            await self.log.append(self.topic, PARTITION, fenced(batch, end), expected_offset=end)


def _owner(log: PartitionedLog, topics: Topics) -> PartitionOwner:
    return PartitionOwner(log, events_topic=topics.events, results_topic=topics.results, partition=PARTITION)


async def _snapshot(log: PartitionedLog, topics: Topics, snapshots_topic: str) -> int:
    """Restore an owner from the whole log as it is now, snapshot it into ``snapshots_topic``; its bytes."""
    owner = _owner(log, topics)
    await restore_owner(log, owner, events_topic=topics.events, results_topic=topics.results, snapshots_topic=None)
    info = await write_snapshot(log, snapshots_topic, take_snapshot(owner), max_record_bytes=_record_limit(log))
    return info.bytes


def _record_limit(log: PartitionedLog) -> int:
    return int(getattr(log, "max_record_bytes", 1_048_576))


async def _time_restore(log: PartitionedLog, topics: Topics, snapshots_topic: str | None, expect_events: int,
                        covered: int, postgres_pid: int | None) -> tuple[float, dict[str, float]]:
    owner = _owner(log, topics)
    here = os.getpid(), threading.get_native_id()
    cpu0, thread0 = time.process_time(), thread_times(*here)
    pg0 = cpu_seconds(postgres_pid) if postgres_pid else float("nan")
    info = await restore_owner(log, owner, events_topic=topics.events, results_topic=topics.results,
                               snapshots_topic=snapshots_topic)
    cpu1, thread1 = time.process_time(), thread_times(*here)
    pg1 = cpu_seconds(postgres_pid) if postgres_pid else float("nan")
    if info.events_replayed != expect_events:
        raise AssertionError(f"replayed {info.events_replayed} events, expected {expect_events}")
    return info.seconds, {"python_us": (cpu1 - cpu0) / covered * 1e6, "postgres_us": (pg1 - pg0) / covered * 1e6,
                          "on_cpu": (thread1[0] - thread0[0]) / info.seconds,
                          "waiting": (thread1[1] - thread0[1]) / info.seconds}


async def measure(log: PartitionedLog, *, events: int, streams: int, runs: int, prefix: str = "",
                  postgres_pid: int | None = None) -> RestoreBench:
    """Seed one partition with ``events`` events over ``streams`` projects and time the three restores."""
    tag = prefix or f"rb{uuid.uuid4().hex[:8]}."
    topics = Topics(f"{tag}events", f"{tag}command-results", f"{tag}snapshots-end", f"{tag}snapshots-90")
    for topic in (topics.events, topics.results):
        await log.create_topic(topic, 1)
    for topic in (topics.snapshots_end, topics.snapshots_90):
        await log.create_topic(topic, 1, config=SNAPSHOT_TOPIC_CONFIG)
    # At least ~100 events per stream: a small --events keeps the shape of the large one.
    streams = max(1, min(streams, events // 100))
    seeder = Seeder(log, topics.events, streams)
    started = time.perf_counter()
    head = max(streams, events * 9 // 10)
    await seeder.write(head)
    bytes_90 = await _snapshot(log, topics, topics.snapshots_90)
    await seeder.write(events - head)
    seed_seconds = time.perf_counter() - started
    bytes_end = await _snapshot(log, topics, topics.snapshots_end)
    full, at_end, at_90 = [], [], []
    for _ in range(runs):
        full.append(await _time_restore(log, topics, None, events, events, postgres_pid))
        at_end.append(await _time_restore(log, topics, topics.snapshots_end, 0, events, postgres_pid))
        at_90.append(await _time_restore(log, topics, topics.snapshots_90, events - head, events, postgres_pid))
    return RestoreBench(log.engine, events, streams, seed_seconds, [
        Measure(label, replayed, size, [seconds for seconds, _ in runs_], [usage for _, usage in runs_])
        for label, replayed, size, runs_ in (("(a) full log, no snapshot", events, 0, full),
                                             ("(b) snapshot at the end, empty tail", 0, bytes_end, at_end),
                                             ("(c) snapshot at 90%, 10% tail", events - head, bytes_90, at_90))
    ])


@asynccontextmanager
async def _log(settings: Settings) -> AsyncIterator[tuple[PartitionedLog, int | None]]:
    """Kafka when configured, else the PostgreSQL log on an embedded PostgreSQL in a temporary directory."""
    if settings.kafka_bootstrap_servers:
        from blackboard.events.kafka import KafkaLog

        kafka = KafkaLog(settings.kafka_bootstrap_servers)
        await kafka.start()
        try:
            yield kafka, None
        finally:
            await kafka.close()
        return
    from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres
    from blackboard.events.postgres import PostgresLog

    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg = PostgresLog(start_embedded_postgres(Path(tmp)), schema="bench_log")
        try:
            await pg.start()
            yield pg, postmaster_pid(Path(tmp) / "postgres")
        finally:
            await pg.close()
            stop_embedded_postgres(Path(tmp) / "postgres")


def report(bench: RestoreBench, runs: int) -> None:
    """Print the table and how it was measured."""
    table = Table(title=f"blackboard bench --suite restore: {bench.events:,} events over {bench.streams:,} project "
                        f"streams in one partition, {bench.engine} log, median of {runs} runs "
                        f"({os.cpu_count()} cores)")
    for col in ("restore", "events replayed", "snapshot bytes", "seconds", "events/s of the log", "runs (s)",
                "CPU µs per event: Python / PostgreSQL", "its thread: on a CPU + waiting"):
        table.add_column(col)
    for m in bench.measures:
        def med(key: str, m: Measure = m) -> float:
            return float(statistics.median(u[key] for u in m.usage)) if m.usage else float("nan")

        table.add_row(m.label, f"{m.events:,}", f"{m.snapshot_bytes:,}", f"{m.median:.2f}",
                      f"{bench.events / m.median:,.0f}", ", ".join(f"{s:.2f}" for s in m.seconds),
                      f"{med('python_us'):.1f} / {med('postgres_us'):.1f}",
                      f"{med('on_cpu'):.0%} + {med('waiting'):.0%}")
    console.print(table)
    console.print(
        f"Seeded in {bench.seed_seconds:.0f} s (each event its own command). Each restore is restore_owner on a "
        "fresh owner: load and decode the snapshot (b, c), then read, decode and fold events[p] and "
        "command-results[p] from there to their exact ends. events/s = all the events the restored state "
        f"covers over the restore's seconds. An owner (and so its snapshot) keeps at most the {KNOWN_WINDOW:,} most "
        "recent command ids by default; a restore from the full log keeps the same ones.")


async def _main(events: int, streams: int, runs: int) -> None:
    settings = Settings()
    async with _log(settings) as (log, postgres_pid):
        console.print(f"Seeding one partition of the {log.engine} log with {events:,} events…")
        bench = await measure(log, events=events, streams=streams, runs=runs, postgres_pid=postgres_pid)
    report(bench, runs)


def run_restore_bench(*, events: int, runs: int, streams: int = 10_000) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    asyncio.run(_main(events, streams, runs))
