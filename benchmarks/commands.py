"""``blackboard bench``: the HTTP command path and the projector's catch-up rate, measured for real.

Everything runs on this machine: an embedded PostgreSQL, the PostgreSQL log, and ``blackboard up``
processes on loopback. Each figure is the median of several runs; the method is printed with it.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.table import Table

from benchmarks.server import Server, Usage, busiest, console, pct, postmaster_pid, process_tree, thread_busy
from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres


async def _create_projects(client: httpx.AsyncClient, url: str, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}-{i}" for i in range(n)]
    for pid in ids:
        body = {"type": "project.create", "stream": f"project:{pid}",
                "payload": {"title": pid, "currency": "EUR", "budget_total": "999999999.00"}}
        r = await client.post(f"{url}/v1/commands", json=body)
        r.raise_for_status()
    return ids


async def _drive(url: str, ids: list[str], clients: int, total: int) -> tuple[float, list[float]]:
    """``total`` add_cost commands from ``clients`` concurrent HTTP clients; (elapsed, latencies)."""
    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        rng = random.Random()
        for _ in counter:
            body = {"type": "project.add_cost", "stream": f"project:{rng.choice(ids)}",
                    "payload": {"amount": "1.25", "reason": "bench"}}
            t0 = time.perf_counter()
            r = await client.post(f"{url}/v1/commands", json=body)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"unexpected {r.status_code}: {r.text}")

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - t0, latencies


async def _projected(pg_url: str, schema: str) -> int:
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
    try:
        value = await conn.fetchval("SELECT coalesce(sum(next_offset), 0) FROM projection_offsets")
        return int(value)
    finally:
        await conn.close()


async def _log_size(pg_url: str) -> int:
    conn = await asyncpg.connect(pg_url)
    try:
        value = await conn.fetchval("SELECT count(*) FROM blackboard_log.records WHERE topic = 'events'")
        return int(value)
    finally:
        await conn.close()


async def _command_runs(env: dict[str, str], clients: int, commands: int, projects: int, runs: int) -> list[Any]:
    server = Server(env, [])
    await server.ready()
    results = []
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            ids = await _create_projects(client, server.url, "bench", projects)
        await _drive(server.url, ids, clients, min(200, commands))  # warm-up
        for _ in range(runs):
            elapsed, lat = await _drive(server.url, ids, clients, commands)
            results.append((commands / elapsed, pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000))
    finally:
        server.stop()
    return results


async def _service_runs(pg_url: str, clients: int, commands: int, projects: int, runs: int) -> list[float]:
    """The same add_cost load straight into the command service: validation, decide, append; no HTTP."""
    import uuid

    import msgspec
    from pydantic import SecretStr

    from blackboard.app import Runtime
    from blackboard.command_api.service import submit as submit_command
    from blackboard.config import Settings
    from blackboard.domain.decoding import validate_command

    tag = uuid.uuid4().hex[:8]
    settings = Settings(postgres_url=SecretStr(pg_url), topic_prefix=f"svc{tag}.", read_schema=f"svc{tag}")
    runtime = Runtime(settings, pg_url, roles=frozenset({"command"}))
    await runtime.start()
    assert runtime.commands is not None
    service = runtime.commands

    async def submit(body: dict[str, Any]) -> None:
        valid = validate_command(msgspec.json.encode(body))
        await submit_command(service, valid.request, valid.payload, actor="bench", fingerprint=valid.fingerprint)

    rates = []
    try:
        for i in range(projects):
            await submit({"type": "project.create", "stream": f"project:s{i}",
                          "payload": {"title": "t", "currency": "EUR", "budget_total": "999999999"}})
        for _ in range(runs):
            todo = iter(range(commands))

            async def worker(todo: Iterator[int]) -> None:
                for i in todo:
                    await submit({"type": "project.add_cost", "stream": f"project:s{i % projects}",
                                  "payload": {"amount": "1.25", "reason": "bench"}})

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(todo) for _ in range(clients)))
            rates.append(commands / (time.perf_counter() - t0))
    finally:
        await runtime.stop()
    return rates


async def _projector_runs(env: dict[str, str], pg_url: str, pgdata: Path, backlog: int, clients: int,
                          runs: int) -> list[dict[str, float]]:
    """Each run: events/s of a projector-only process catching up a backlog, with where its CPU went (µs per
    event of its process tree and of PostgreSQL) and how busy its busiest thread was (on a CPU, waiting for one):
    a thread near 100 % of the wall time is the limit."""
    results = []
    postgres = postmaster_pid(pgdata)
    for run in range(runs):
        writer = Server(env, ["command", "query"])
        await writer.ready()
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                ids = await _create_projects(client, writer.url, f"backlog{run}", 20)
            await _drive(writer.url, ids, clients, backlog)
        finally:
            writer.stop()
        target = await _log_size(pg_url)
        projector = Server(env, ["projector"])
        await projector.ready()
        threads = thread_busy(process_tree(projector.proc.pid))
        before = Usage(projector.proc.pid, postgres, None)
        start = await _projected(pg_url, "blackboard")
        while (done := await _projected(pg_url, "blackboard")) < target:
            await asyncio.sleep(0.05)
        after = Usage(projector.proc.pid, postgres, None)
        wall = after.wall - before.wall
        on_cpu, waiting = busiest(threads, thread_busy(process_tree(projector.proc.pid)), wall)
        usage = after.per(before, done - start)
        results.append({"rate": (done - start) / wall, "projector_us": usage["server_us"],
                        "postgres_us": usage["postgres_us"], "thread_on_cpu": on_cpu, "thread_waiting": waiting,
                        "machine_busy": usage["machine_busy"]})
        projector.stop()
    return results


async def _main(clients: int, commands: int, projects: int, backlog: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = start_embedded_postgres(Path(tmp))
        env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_DATA_DIR": tmp}
        try:
            console.print(f"[bold]HTTP command path[/]: {clients} concurrent clients × {commands} "
                          f"project.add_cost over {projects} projects, {runs} runs after a warm-up; one "
                          "`blackboard up` process (embedded PostgreSQL, PostgreSQL log, projector alongside).")
            cmd = await _command_runs(env, clients, commands, projects, runs)
            console.print(f"[bold]Command service without HTTP[/]: the same load from {clients} concurrent tasks "
                          "in this process straight into the partition owners (validation, decide, append to "
                          "the PostgreSQL log), to show what the HTTP stack costs.")
            svc = await _service_runs(pg_url, clients, commands, projects, runs)
            console.print(f"[bold]Projector catch-up[/]: {backlog} events appended with the projector stopped, "
                          "then a projector-only process started; events/s from its readiness to the last "
                          f"offset applied (PostgreSQL log → PostgreSQL read models), {runs} runs.")
            proj = await _projector_runs(env, pg_url, Path(tmp) / "postgres", backlog, clients, runs)
        finally:
            stop_embedded_postgres(Path(tmp) / "postgres")
    table = Table(title=f"blackboard bench — median of {runs} runs ({os.cpu_count()} cores)")
    for col in ("measure", "median", "runs"):
        table.add_column(col)
    table.add_row("commands/s", f"{statistics.median(r[0] for r in cmd):.0f}",
                  ", ".join(f"{r[0]:.0f}" for r in cmd))
    table.add_row("command p50 ms", f"{statistics.median(r[1] for r in cmd):.1f}",
                  ", ".join(f"{r[1]:.1f}" for r in cmd))
    table.add_row("command p99 ms", f"{statistics.median(r[2] for r in cmd):.1f}",
                  ", ".join(f"{r[2]:.1f}" for r in cmd))
    table.add_row("commands/s without HTTP", f"{statistics.median(svc):.0f}", ", ".join(f"{r:.0f}" for r in svc))
    table.add_row("projector events/s", f"{statistics.median(r['rate'] for r in proj):.0f}",
                  ", ".join(f"{r['rate']:.0f}" for r in proj))

    def med(key: str) -> float:
        return statistics.median(r[key] for r in proj)

    table.add_row("  CPU µs per event: projector / PostgreSQL", f"{med('projector_us'):.1f} / {med('postgres_us'):.1f}",
                  ", ".join(f"{r['projector_us']:.1f} / {r['postgres_us']:.1f}" for r in proj))
    table.add_row("  its busiest thread: on a CPU + waiting for one; machine busy",
                  f"{med('thread_on_cpu'):.0%} + {med('thread_waiting'):.0%}; {med('machine_busy'):.0%}",
                  ", ".join(f"{r['thread_on_cpu']:.0%} + {r['thread_waiting']:.0%}" for r in proj))
    console.print(table)


def run_bench(*, clients: int, commands: int, projects: int, backlog: int, runs: int) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    asyncio.run(_main(clients, commands, projects, backlog, runs))
