"""``blackboard bench``: the benchmarks of a source checkout, which are not part of the installed package."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

from blackboard.cli.base import app, console


@app.command
def bench(
    *,
    clients: int = 16,
    commands: int = 2000,
    projects: int = 20,
    backlog: int = 20000,
    runs: int = 3,
    suite: Literal["commands", "replay", "reads", "claims", "restore", "deciders", "compare", "tenants",
                   "memory"] = "commands",
    events: int = 1_000_000,
    batch_size: int = 10_000,
    reads: int = 5000,
    tasks: int = 2000,
    deciders: str = "1,2,3",
    workers: int | None = None,
    minutes: float = 10.0,
) -> None:
    """Measure, on its own embedded PostgreSQL in a temporary directory, and print how it measured.

    --suite commands: the HTTP command path (commands/s, p50/p99), the command service without HTTP,
    and the projector's events/s on a backlog. --suite replay: a rebuild of --events events
    (end to end, events/s; --workers processes share the catch-up, by default one per core) beside the raw
    read rate of the log and PostgreSQL's COPY rate.
    --suite reads: --reads project reads with and without Redis, batch gets of 100 shots (reads/s,
    p50/p99), and the freshness lag from a command's answer to a read showing it (p50/p99).
    --suite claims: --tasks tasks claimed by 10 and by 50 workers (claims/s, claim p50/p99).
    --suite restore: a partition owner's restore over --events events in one partition, from the full log,
    from a snapshot at the end, and from a snapshot at 90% plus the tail (seconds, events/s); on Kafka when
    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS is set.
    --suite deciders: --deciders counts of decider processes (default 1,2,3) sharing the partitions; 64 projects,
    --commands add_cost per run from --clients clients to random processes (commands/s, p50/p99), in total and
    split into the fast path (sent to the partition's owner) and the routed one; on Kafka when
    BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS is set.
    --suite compare: Blackboard beside the CRUD blackboard it replaces, in --runs interleaved rounds from
    --clients clients (commands in process and over HTTP, cached reads, freshness; ratios to the CRUD baseline).
    --suite tenants: tenant B's steady reads (100/s) alone and while tenant A floods at 10x its limit (200/s per
    tenant), in --runs interleaved rounds of 10 s (B's p50/p99 and their ratio, B's 429s, A's answers, CPU shares).
    --suite memory: W1 over HTTP into `blackboard up` (as compare starts it) from --clients clients for --minutes
    (default 10); the RSS of the server's process tree, PostgreSQL and Redis sampled every 5 s: start, after the
    first minute's warm-up, peak, end, a verdict on flatness, and the commands/s.

    The benchmarks live in the source checkout (benchmarks/), not in the installed package: run this
    from the checkout's top folder, or `python -m benchmarks` there.
    """
    _suites().run_suite(suite=suite, clients=clients, commands=commands, projects=projects, backlog=backlog,
                        runs=runs, events=events, batch_size=batch_size, reads=reads, tasks=tasks, deciders=deciders,
                        workers=workers, minutes=minutes)


def _suites() -> ModuleType:
    """``benchmarks.suites`` of the checkout this package runs from, or of the current directory."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "benchmarks" / "suites.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module("benchmarks.suites")
    console.print("[red]The benchmarks are not part of the installed package: they live in benchmarks/ of the "
                  "source repository. Clone it, install it (pip install -e .) and run `blackboard bench` "
                  "or `python -m benchmarks` from its top folder.[/]")
    raise SystemExit(1)
