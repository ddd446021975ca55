"""``blackboard bench --suite deciders``: commands/s and latency with 1, 2 and 3 decider processes, by path.

For each count N a fresh set of ``blackboard up --role command`` processes in decider mode ``group``
(process managers and the reservation sweeper off) shares the partitions of fresh topics and a fresh log
schema. Once every partition is owned (``GET /v1/partitions``, ``ready``), ``projects`` projects with a
large budget are created and ``project.add_cost`` commands are sent by concurrent HTTP clients, each to a
process chosen at random. A command is *fast* when the process it was sent to owns its partition (decided
at once) and *routed* otherwise (produced to the commands topic, answered through command-results). With
one decider an extra process in mode ``none`` takes a share of the load, so the routed path is measured too.

The log is the PostgreSQL engine on an embedded PostgreSQL, or Kafka when
``BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS`` is set.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec
from rich.table import Table

from benchmarks.server import Server, console, pct
from blackboard.events.partitioner import partition_for
from blackboard.schemas.envelope import stream_partition_key

#: Partitions of the commands and events topics: enough that three deciders each own several.
PARTITIONS = 8
CommandPath = Literal["fast", "routed"]


class PathFigures(msgspec.Struct, frozen=True):
    """One path's share of a run: how many commands took it, their rate over the run's wall time, latency."""

    count: int
    rate: float
    p50_ms: float
    p99_ms: float


class RunFigures(msgspec.Struct, frozen=True):
    """One measured run: every command, then the fast and the routed ones apart."""

    total: PathFigures
    fast: PathFigures
    routed: PathFigures
    #: Whether the processes' own fast/routed counters agree with the path each command was expected to take.
    counters_agree: bool


def _path_figures(latencies: Sequence[float], elapsed: float) -> PathFigures:
    if not latencies:
        return PathFigures(0, 0.0, math.nan, math.nan)
    ms = [s * 1000 for s in latencies]
    return PathFigures(len(ms), len(ms) / elapsed, pct(ms, 0.5), pct(ms, 0.99))


# ── processes ─────────────────────────────────────────────────────────────────────────────


def setup_env(base: dict[str, str], tag: str) -> dict[str, str]:
    """The environment shared by one setup's processes: its own topics, log schema and read schema."""
    return {**base, "BLACKBOARD_TOPIC_PREFIX": f"bench{tag}.", "BLACKBOARD_LOG_SCHEMA": f"bench_{tag}_log",
            "BLACKBOARD_READ_SCHEMA": f"bench_{tag}", "BLACKBOARD_PARTITIONS": str(PARTITIONS),
            "BLACKBOARD_PROCESS_MANAGERS": "false", "BLACKBOARD_SWEEP_RESERVATIONS": "false"}


def start_decider(env: dict[str, str], member: str) -> Server:
    return Server({**env, "BLACKBOARD_DECIDER_MODE": "group", "BLACKBOARD_MEMBER_ID": member}, ["command"])


def start_router(env: dict[str, str]) -> Server:
    """A command process that decides nothing: every command it is sent takes the routed path."""
    return Server({**env, "BLACKBOARD_DECIDER_MODE": "none"}, ["command"])


def stop_all(servers: Sequence[Server]) -> None:
    """SIGTERM to every process at once (they leave the group together, no rebalance between), then wait.

    Note: ``Server.stop`` signals and waits one process at a time; each leaving decider would hand its
    partitions to the others, which would restore them only to be stopped next.
    """
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait_stopped()


async def _report(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    r = await client.get(f"{url}/v1/partitions")
    r.raise_for_status()
    report: dict[str, Any] = r.json()
    return report


async def wait_owned(client: httpx.AsyncClient, deciders: Sequence[Server], timeout: float = 90) -> dict[int, str]:
    """Wait until every partition is ready at exactly one decider and each decider owns one; partition → url."""
    deadline = time.monotonic() + timeout
    while True:
        owners: dict[int, list[str]] = {}
        for server in deciders:
            report = await _report(client, server.url)
            for p in report["partitions"]:
                if p["ready"]:
                    owners.setdefault(p["partition"], []).append(server.url)
        single = {p: urls[0] for p, urls in owners.items() if len(urls) == 1}
        if len(single) == PARTITIONS == len(owners) and {s.url for s in deciders} <= set(single.values()):
            return single
        if time.monotonic() > deadline:
            raise TimeoutError(f"partitions not shared among {len(deciders)} deciders: {owners}")
        await asyncio.sleep(0.25)


async def _counters(client: httpx.AsyncClient, servers: Sequence[Server]) -> tuple[int, int]:
    """Commands decided at once and commands routed, summed over ``servers`` (their own counters)."""
    reports = [await _report(client, s.url) for s in servers]
    return (sum(int(r["decided_here"]) for r in reports),
            sum(int(r["routed"]) for r in reports))


# ── load ──────────────────────────────────────────────────────────────────────────────────


async def create_projects(client: httpx.AsyncClient, urls: Sequence[str], prefix: str, n: int,
                          clients: int) -> list[str]:
    """``n`` projects with a budget no run can spend, created through ``urls`` in turn; their ids."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    gate = asyncio.Semaphore(clients)

    async def create(i: int, pid: str) -> None:
        body = {"type": "project.create", "stream": f"project:{pid}", "command_id": f"create-{pid}",
                "payload": {"title": pid, "currency": "EUR", "budget_total": "999999999999.00"}}
        async with gate:
            for _ in range(50):  # a partition may still be changing hands: 503, then the same id again
                r = await client.post(f"{urls[i % len(urls)]}/v1/commands", json=body)
                if r.status_code == 200:
                    return
                await asyncio.sleep(0.2)
            raise RuntimeError(f"project {pid} not created: {r.status_code} {r.text}")

    await asyncio.gather(*(create(i, pid) for i, pid in enumerate(ids)))
    return ids


async def drive(client: httpx.AsyncClient, urls: Sequence[str], owners: dict[int, str], ids: Sequence[str],
                clients: int, total: int, seed: int) -> tuple[float, dict[CommandPath, list[float]]]:
    """``total`` add_cost commands from ``clients`` concurrent clients, each to a random process.

    Returns the wall time and the latencies (seconds) by the path each command took.
    """
    latencies: dict[CommandPath, list[float]] = {"fast": [], "routed": []}
    counter = iter(range(total))

    async def worker(rng: random.Random) -> None:
        for _ in counter:
            stream, url = f"project:{rng.choice(ids)}", rng.choice(urls)
            owner = owners[partition_for(stream_partition_key(stream), PARTITIONS)]
            path: CommandPath = "fast" if owner == url else "routed"
            body = {"type": "project.add_cost", "stream": stream,
                    "payload": {"amount": "1.25", "reason": "bench"}}
            t0 = time.perf_counter()
            r = await client.post(f"{url}/v1/commands", json=body)
            latencies[path].append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"unexpected {r.status_code} from {url}: {r.text}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(random.Random(seed * 1000 + i)) for i in range(clients)))
    return time.perf_counter() - t0, latencies


async def measure_setup(base_env: dict[str, str], deciders: int, *, clients: int, commands: int, runs: int,
                        projects: int) -> list[RunFigures]:
    """Start ``deciders`` decider processes (plus a router with one), measure ``runs`` runs, stop them all."""
    env = setup_env(base_env, f"n{deciders}_{uuid.uuid4().hex[:6]}")
    servers: list[Server] = []
    try:
        members = [start_decider(env, f"bench-{i}") for i in range(deciders)]
        servers += members
        if deciders == 1:
            servers.append(start_router(env))
        for server in servers:
            await server.ready()
        limits = httpx.Limits(max_connections=clients * len(servers), max_keepalive_connections=clients * len(servers))
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            owners = await wait_owned(client, members)
            urls = [s.url for s in servers]
            ids = await create_projects(client, urls, "p", projects, clients)
            await drive(client, urls, owners, ids, clients, min(commands, 300), seed=0)  # warm-up
            results = []
            for run in range(runs):
                before = await _counters(client, servers)
                elapsed, lat = await drive(client, urls, owners, ids, clients, commands, seed=run + 1)
                after = await _counters(client, servers)
                agree = (after[0] - before[0], after[1] - before[1]) == (len(lat["fast"]), len(lat["routed"]))
                results.append(RunFigures(_path_figures([*lat["fast"], *lat["routed"]], elapsed),
                                          _path_figures(lat["fast"], elapsed), _path_figures(lat["routed"], elapsed),
                                          agree))
        return results
    except Exception:
        for server in servers:
            console.print(f"[red]{server.url} said:[/]\n{server.output()}")
        raise
    finally:
        stop_all(servers)


async def measure(base_env: dict[str, str], counts: Sequence[int], *, clients: int, commands: int, runs: int,
                  projects: int) -> dict[int, list[RunFigures]]:
    """Every decider count in turn, each on fresh topics and schemas; ``base_env`` names the services."""
    return {n: await measure_setup(base_env, n, clients=clients, commands=commands, runs=runs, projects=projects)
            for n in counts}


# ── the command ───────────────────────────────────────────────────────────────────────────


def _median(values: Sequence[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else math.nan


def _fmt(value: float, digits: int) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _table(results: dict[int, list[RunFigures]], runs: int) -> Table:
    table = Table(title=f"blackboard bench --suite deciders — median of {runs} runs ({os.cpu_count()} cores)")
    for col in ("deciders", "path", "share", "commands/s", "p50 ms", "p99 ms", "runs (commands/s)"):
        table.add_column(col, justify="left" if col in ("deciders", "path") else "right")
    for n, rows in results.items():
        label = f"{n} + router" if n == 1 else str(n)
        for path in ("total", "fast", "routed"):
            figs: list[PathFigures] = [getattr(r, path) for r in rows]
            share = _median([f.count / r.total.count for f, r in zip(figs, rows, strict=True)])
            table.add_row(label if path == "total" else "", "all" if path == "total" else path, f"{share:.0%}",
                          _fmt(_median([f.rate for f in figs]), 0), _fmt(_median([f.p50_ms for f in figs]), 1),
                          _fmt(_median([f.p99_ms for f in figs]), 1), ", ".join(_fmt(f.rate, 0) for f in figs))
    return table


def _engine() -> str:
    kafka = os.environ.get("BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS")
    return f"Kafka log at {kafka}" if kafka else "PostgreSQL log on an embedded PostgreSQL"


async def _main(counts: Sequence[int], clients: int, commands: int, runs: int, projects: int
                ) -> dict[int, list[RunFigures]]:
    from blackboard.embedded import start_embedded_postgres, stop_embedded_postgres

    given = os.environ.get("BLACKBOARD_POSTGRES_URL")
    with tempfile.TemporaryDirectory(prefix="blackboard-bench-") as tmp:
        os.chmod(tmp, 0o755)
        pg_url = given or start_embedded_postgres(Path(tmp))
        try:
            env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_DATA_DIR": tmp}
            return await measure(env, counts, clients=clients, commands=commands, runs=runs, projects=projects)
        finally:
            if not given:
                stop_embedded_postgres(Path(tmp) / "postgres")


def parse_counts(spec: str) -> tuple[int, ...]:
    """``"1,2,3"`` → ``(1, 2, 3)``; each count between 1 and the number of partitions."""
    counts = tuple(int(part) for part in spec.split(",") if part.strip())
    if not counts or any(not 1 <= n <= PARTITIONS for n in counts):
        raise ValueError(f"--deciders must list counts between 1 and {PARTITIONS}, got {spec!r}")
    return counts


def run_deciders_bench(*, deciders: str, clients: int, commands: int, runs: int, projects: int = 64) -> None:
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    try:
        counts = parse_counts(deciders)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise SystemExit(2) from None
    console.print(
        f"[bold]Deciders[/]: {', '.join(map(str, counts))} `blackboard up --role command` processes in decider mode "
        f"'group' sharing {PARTITIONS} partitions ({_engine()}; {os.cpu_count()} cores, every process on this "
        f"machine); {projects} projects; {clients} concurrent HTTP clients send {commands} project.add_cost per run, "
        f"each to a process chosen at random; {runs} runs after a warm-up, fresh topics and schemas per count. "
        "fast: sent to the process that owns the command's partition (decided at once); routed: sent to another "
        "(commands topic → owner → command-results). With 1 decider an extra process in mode 'none' takes half "
        "the load, all of it routed. commands/s of a path: its commands over the run's wall time.")
    results = asyncio.run(_main(counts, clients, commands, runs, projects))
    console.print(_table(results, runs))
    if not all(r.counters_agree for rows in results.values() for r in rows):
        console.print("[yellow]note: in some run the processes' own fast/routed counters differ from the path "
                      "expected from the ownership read before it (a partition changed hands during the run)[/]")
