"""``blackboard bench --suite claims``: claims per second and claim latency with 10 and 50 workers.

One ``blackboard up`` process (embedded PostgreSQL, PostgreSQL log, projector and process managers
alongside) on loopback. Each run creates ``tasks`` tasks of mixed priorities (one task graph), waits
until the read model holds them, then starts N workers, each an HTTP client looping
claim → start → complete. Claims/s is tasks claimed over the wall time until the last one
completed; the latency is that of each ``POST /v1/nodes/{id}/claim`` that returned a task.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.table import Table

from benchmarks.server import Server, console, pct
from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres


async def _seed(client: httpx.AsyncClient, prefix: str, tasks: int) -> None:
    body = {"tasks": [{"id": f"{prefix}-{i}", "name": "bench", "priority": i % 10} for i in range(tasks)]}
    r = await client.post("/v1/task-graphs", json=body, timeout=300)
    r.raise_for_status()
    last = r.json()["tasks"][-1]["position"]
    seen = await client.get(f"/v1/tasks/{prefix}-{tasks - 1}", params={"consistent_with": last}, timeout=60)
    seen.raise_for_status()


async def _worker(client: httpx.AsyncClient, node: str, latencies: list[float], done: list[int],
                  errors: list[int]) -> None:
    await client.post("/v1/commands", json={"type": "node.register", "stream": f"node:{node}",
                                            "payload": {"hostname": "bench", "capacity": 1}})
    while True:
        started = time.perf_counter()
        try:
            r = await client.post(f"/v1/nodes/{node}/claim", json={})
            if r.status_code == 204:
                return
            r.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
            claim = r.json()
            stream = f"task:{claim['task_id']}"
            for type_ in ("task.start", "task.complete"):
                await client.post("/v1/commands", json={"type": type_, "stream": stream,
                                                        "payload": {"token": claim["token"]}})
        except httpx.TransportError:
            # A pooled connection the server closed as we reused it: counted, and the loop goes on.
            errors.append(1)
            continue
        done.append(1)


async def _run(url: str, prefix: str, workers: int, tasks: int) -> tuple[float, float, float]:
    limits = httpx.Limits(max_connections=workers + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await _seed(client, prefix, tasks)
        latencies: list[float] = []
        done: list[int] = []
        errors: list[int] = []
        started = time.perf_counter()
        await asyncio.gather(*(_worker(client, f"{prefix}-w{i}", latencies, done, errors) for i in range(workers)))
        elapsed = time.perf_counter() - started
    if errors:
        console.print(f"  ({len(errors)} requests lost to a closed connection in {prefix})")
    return len(done) / elapsed, pct(latencies, 0.50), pct(latencies, 0.99)


async def _main(tasks: int, runs: int, worker_counts: tuple[int, ...]) -> dict[int, list[tuple[float, float, float]]]:
    results: dict[int, list[tuple[float, float, float]]] = {n: [] for n in worker_counts}
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = start_embedded_postgres(Path(tmp))
        server = Server({"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_DATA_DIR": tmp}, [])
        try:
            await server.ready()
            await _run(server.url, "warm", 10, 200)
            for run in range(runs):
                for n in worker_counts:
                    results[n].append(await _run(server.url, f"r{run}-n{n}", n, tasks))
        except Exception:
            console.print(f"[red]the server said:[/]\n{server.output()}")
            raise
        finally:
            server.stop()
            stop_embedded_postgres(Path(tmp) / "postgres")
    return results


def run_claims_bench(*, tasks: int, runs: int) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    counts = (10, 50)
    console.print(f"[bold]Claims[/]: {tasks} tasks (priorities 0-9) per run, claimed by 10 and by 50 HTTP workers "
                  f"(claim → start → complete, one task at a time each), {runs} runs after a warm-up; one "
                  "`blackboard up` process (embedded PostgreSQL, PostgreSQL log, projector and process managers).")
    results = asyncio.run(_main(tasks, runs, counts))
    table = Table(title=f"blackboard bench --suite claims — median of {runs} runs ({os.cpu_count()} cores)")
    for col in ("workers", "claims/s", "claim p50 ms", "claim p99 ms", "runs (claims/s)"):
        table.add_column(col)
    for n, rows in results.items():
        table.add_row(str(n), f"{statistics.median(r[0] for r in rows):.0f}",
                      f"{statistics.median(r[1] for r in rows):.1f}", f"{statistics.median(r[2] for r in rows):.1f}",
                      ", ".join(f"{r[0]:.0f}" for r in rows))
    console.print(table)
