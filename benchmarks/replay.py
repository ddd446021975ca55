"""``blackboard bench --suite replay``: a full rebuild of the read models, beside the machine's limits.

One embedded PostgreSQL holds a PostgreSQL log seeded with ``events`` events (projects with costs
and shot patches, tasks moving through their states, over 8 partitions). Measured in the same run:
the raw consume rate of the log (records read, nothing decoded), PostgreSQL's COPY rate into the
change log (the largest write of a rebuild), and ``blackboard replay`` end to end — migrate a new
schema, fold every event, swap — in events per second. Each figure is the median of ``runs``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from rich.console import Console
from rich.table import Table

from benchmarks.server import ThreadSampler, cpu_seconds, machine_busy, postmaster_pid, process_tree
from blackboard.connect import quiet_logging
from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres
from blackboard.events.codec import to_record
from blackboard.events.collector import bulk_gc
from blackboard.events.log import Record
from blackboard.events.partitioner import partition_for
from blackboard.events.postgres import PostgresLog
from blackboard.logs import configure_logging
from blackboard.projector import generations
from blackboard.projector.bulk_load import defer_indexes
from blackboard.projector.migrate import create_pool, migrate
from blackboard.projector.replay import replay
from blackboard.schemas.envelope import Envelope, stream_partition_key
from blackboard.schemas.project import CostAdded, ProjectCreated, ShotUpdated
from blackboard.schemas.registry import encode_payload, event_name, schema_version_of
from blackboard.schemas.task import TaskCreated, TaskStatusChanged

console = Console(width=160)
PARTITIONS = 8
TOPIC = "events"
BASE = "bench"
#: Events per project stream and per task stream in the seeded log.
PROJECT_EVENTS, TASK_EVENTS = 50, 5


def _envelope(event: msgspec.Struct, stream: str, version: int, at: datetime) -> Envelope:
    name = event_name(event)
    return Envelope(
        event_id=str(uuid.uuid4()), stream=stream, stream_version=version, type=name,
        schema_version=schema_version_of(name), occurred_at=at, command_id=f"cmd-{uuid.uuid4()}",
        correlation_id="bench", causation_id="bench", actor="bench", writer_epoch=1,
        partition_key=stream_partition_key(stream), payload=encode_payload(event))


def _project_stream(i: int, at: datetime) -> list[Envelope]:
    stream = f"project:p-{i}"
    events: list[msgspec.Struct] = [ProjectCreated(f"Project {i}", "EUR", Decimal(1_000_000), {"style": "noir"})]
    for n in range(1, PROJECT_EVENTS):
        if n % 2:
            events.append(CostAdded(Decimal("12.50"), "render"))
        else:
            events.append(ShotUpdated(f"s-{n % 7}", {"status": "review", "take": n}, n // 14 + 1))
    # Shot versions: each shot's patches count up from 1 in the order they come.
    seen: dict[str, int] = {}
    fixed: list[msgspec.Struct] = []
    for ev in events:
        if isinstance(ev, ShotUpdated):
            seen[ev.shot_id] = seen.get(ev.shot_id, 0) + 1
            ev = ShotUpdated(ev.shot_id, ev.patch, seen[ev.shot_id])
        fixed.append(ev)
    return [_envelope(ev, stream, v, at + timedelta(milliseconds=v)) for v, ev in enumerate(fixed, 1)]


def _task_stream(i: int, at: datetime) -> list[Envelope]:
    stream = f"task:t-{i}"
    moves = [("pending", "claimed"), ("claimed", "running"), ("running", "succeeded")]
    events: list[msgspec.Struct] = [TaskCreated(f"task {i}", i % 10, {"frames": i % 100})]
    events += [TaskStatusChanged(a, b) for a, b in moves][: TASK_EVENTS - 1]
    return [_envelope(ev, stream, v, at + timedelta(milliseconds=v)) for v, ev in enumerate(events, 1)]


async def seed(log: PostgresLog, events: int) -> int:
    """Append about ``events`` events (80% project streams, 20% task streams); return how many."""
    await log.create_topic(TOPIC, PARTITIONS)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    projects = max(1, int(events * 0.8) // PROJECT_EVENTS)
    tasks = max(1, (events - projects * PROJECT_EVENTS) // min(TASK_EVENTS, 4))
    pending: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    written = 0

    async def flush(limit: int) -> None:
        nonlocal written
        jobs = []
        for p, records in pending.items():
            if len(records) >= limit and records:
                jobs.append(log.append(TOPIC, p, records))
                written += len(records)
                pending[p] = []
        await asyncio.gather(*jobs)

    streams = [(_project_stream, i) for i in range(projects)] + [(_task_stream, i) for i in range(tasks)]
    for make, i in streams:
        for env in make(i, at):
            pending[partition_for(env.partition_key.encode(), PARTITIONS)].append(to_record(env))
        await flush(5000)
    await flush(1)
    return written


async def consume_rate(log: PostgresLog, total: int) -> float:
    """Records per second read from offset 0 to the end of every partition, nothing decoded.

    The collector is set as a rebuild sets it (``bulk_gc``), so that both are measured alike.
    """
    reader = log.reader(TOPIC)
    for p in range(PARTITIONS):
        await reader.seek(p, 0)
    started, read = time.perf_counter(), 0
    try:
        with bulk_gc():
            while read < total:
                read += len(await reader.read(max_records=10_000, timeout=1.0))
    finally:
        await reader.close()
    return read / (time.perf_counter() - started)


async def copy_rate(pg_url: str, total: int, *, as_rebuilt: bool) -> float:
    """Rows per second COPYed into a fresh read-model schema's change log: with all its indexes, as the
    live projector writes it, or ``as_rebuilt`` (only its primary key, as a rebuild's catch-up writes it)."""
    schema = f"copy_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(pg_url, schema, min_size=1, max_size=1)
    try:
        await migrate(pool, schema)
        if as_rebuilt:
            await defer_indexes(pool, schema)
        at = datetime(2026, 1, 1, tzinfo=UTC)
        payload = msgspec.Raw(b'{"amount":"12.50","reason":"render","artifact_id":null}')
        rows = [(f"project:p-{i // 50}", i % 50 + 1, i % PARTITIONS, i, str(uuid.uuid4()), "project.cost_added", 1,
                 "bench", "cmd", "bench", "bench", at, payload) for i in range(total)]
        columns = ("stream", "stream_version", "partition", "offset", "event_id", "type", "schema_version", "actor",
                   "command_id", "correlation_id", "causation_id", "occurred_at", "payload")
        started = time.perf_counter()
        async with pool.acquire() as conn:
            for chunk in range(0, total, 10_000):
                await conn.copy_records_to_table("change_log", records=rows[chunk:chunk + 10_000], columns=columns)
        return total / (time.perf_counter() - started)
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.close()


async def _quiet(pg_url: str) -> None:
    """Write out what the previous measure left dirty (CHECKPOINT), so that the next one does not pay for it."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def _own_cpu(postgres: int | None) -> float:
    """CPU seconds of this process and its workers (live or ended), PostgreSQL left out should it be a child."""
    own = cpu_seconds(os.getpid())
    if postgres and postgres in process_tree(os.getpid()):
        own -= cpu_seconds(postgres)
    return own


async def _main(events: int, runs: int, batch_size: int, workers: int | None) -> None:
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = start_embedded_postgres(Path(tmp))
        postgres = postmaster_pid(Path(tmp) / "postgres")
        try:
            log = PostgresLog(pg_url, schema="bench_log")
            await log.start()
            try:
                console.print(f"Seeding the PostgreSQL log with ~{events:,} events over {PARTITIONS} partitions…")
                t0 = time.perf_counter()
                total = await seed(log, events)
                console.print(f"  {total:,} events in {time.perf_counter() - t0:.0f} s")
                results: list[dict[str, Any]] = []
                used = 1
                for run in range(runs):
                    await _quiet(pg_url)
                    raw = await consume_rate(log, total)
                    await _quiet(pg_url)
                    copy = await copy_rate(pg_url, min(total, 1_000_000), as_rebuilt=False)
                    await _quiet(pg_url)
                    bulk = await copy_rate(pg_url, min(total, 1_000_000), as_rebuilt=True)
                    await _quiet(pg_url)
                    cpu0 = _own_cpu(postgres), cpu_seconds(postgres) if postgres else float("nan")
                    busy0 = machine_busy()
                    async with ThreadSampler(os.getpid()) as sampler:
                        report = await replay(log, pg_url, base=BASE, topic=TOPIC, batch_size=batch_size,
                                              handover_seconds=0.0, workers=workers,
                                              open_log=functools.partial(PostgresLog, pg_url, schema="bench_log"),
                                              worker_setup=quiet_logging)
                    busy1 = machine_busy()
                    on_cpu, waiting = sampler.busiest()
                    usage = {"python_us": (_own_cpu(postgres) - cpu0[0]) / total * 1e6,
                             "postgres_us": ((cpu_seconds(postgres) if postgres else float("nan")) - cpu0[1])
                             / total * 1e6,
                             "on_cpu": on_cpu, "waiting": waiting,
                             "machine": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])}
                    assert report.records == total, (report.records, total)
                    conn = await asyncpg.connect(pg_url)
                    try:
                        await generations.drop(conn, BASE)
                    finally:
                        await conn.close()
                    results.append({"raw": raw, "copy": copy, "bulk": bulk, "replay": report.events_per_second,
                                    **usage})
                    used = report.workers
                    console.print(f"  run {run + 1}: log read {raw:,.0f} records/s, COPY {copy:,.0f} rows/s "
                                  f"({bulk:,.0f} as rebuilt), "
                                  f"replay {report.events_per_second:,.0f} events/s ({report.seconds:.1f} s, "
                                  f"{used} process{'es' if used > 1 else ''})")
            finally:
                await log.close()
        finally:
            stop_embedded_postgres(Path(tmp) / "postgres")
    table = Table(title=f"blackboard bench --suite replay: {total:,} events, median of {runs} runs "
                        f"({os.cpu_count()} cores, batch {batch_size}, catch-up in {used} process"
                        f"{'es' if used > 1 else ''})")
    for col in ("measure", "median", "runs"):
        table.add_column(col)
    for key, label in (("raw", "log read, records/s (no decoding)"),
                       ("copy", "COPY into change_log with all its indexes, rows/s"),
                       ("bulk", "COPY into change_log as a rebuild loads it (primary key only), rows/s"),
                       ("replay", "replay end to end, events/s")):
        values = [r[key] for r in results]
        table.add_row(label, f"{statistics.median(values):,.0f}", ", ".join(f"{v:,.0f}" for v in values))

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in results))

    table.add_row("  CPU µs per event: this process and its workers / PostgreSQL",
                  f"{med('python_us'):.1f} / {med('postgres_us'):.1f}",
                  ", ".join(f"{r['python_us']:.1f} / {r['postgres_us']:.1f}" for r in results))
    table.add_row("  the busiest thread: on a CPU + waiting for one; machine busy",
                  f"{med('on_cpu'):.0%} + {med('waiting'):.0%}; {med('machine'):.0%}",
                  ", ".join(f"{r['on_cpu']:.0%} + {r['waiting']:.0%}; {r['machine']:.0%}" for r in results))
    console.print(table)
    console.print("Replay end to end = migrate a new schema, read + decode + fold + write every event "
                  "(rows, change log by COPY, offsets) in batches, build the indexes left out of the catch-up, "
                  "then swap; Redis and notifications off. Each measure starts after a CHECKPOINT. The log read "
                  "and COPY figures are one connection each, one after the other; the catch-up folds partitions "
                  "in that many processes at once.")


def run_replay_bench(*, events: int, runs: int, batch_size: int, workers: int | None = None) -> None:
    configure_logging(logging.WARNING)
    asyncio.run(_main(events, runs, batch_size, workers))
