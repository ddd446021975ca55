"""The suites by name: ``blackboard bench`` and ``python -m benchmarks`` run one of them with their options."""

from __future__ import annotations

from typing import Literal

Suite = Literal["commands", "replay", "reads", "claims", "restore", "deciders", "compare", "tenants",
                "memory"]


def run_suite(*, suite: Suite, clients: int, commands: int, projects: int, backlog: int, runs: int, events: int,
              batch_size: int, reads: int, tasks: int, deciders: str, workers: int | None,
              minutes: float = 10.0) -> None:
    """Run ``suite`` with the options it takes (the others are ignored) and print what it measured."""
    # Each suite imports only its own module: the others may need what this machine lacks.
    if suite == "memory":
        from benchmarks.memory import run_memory_bench

        run_memory_bench(minutes=minutes, clients=clients)
    elif suite == "deciders":
        from benchmarks.deciders import run_deciders_bench

        run_deciders_bench(deciders=deciders, clients=clients, commands=commands, runs=runs)
    elif suite == "restore":
        from benchmarks.restore import run_restore_bench

        run_restore_bench(events=events, runs=runs)
    elif suite == "claims":
        from benchmarks.claims import run_claims_bench

        run_claims_bench(tasks=tasks, runs=runs)
    elif suite == "reads":
        from benchmarks.reads import run_reads_bench

        run_reads_bench(clients=clients, reads=reads, projects=projects, runs=runs)
    elif suite == "compare":
        from benchmarks.compare import run_compare_bench

        # Its own sizes (projects, commands, reads) suit a comparison; the rounds and clients are the caller's.
        run_compare_bench(rounds=runs, clients=clients)
    elif suite == "tenants":
        from benchmarks.tenants import run_tenants_bench

        # Its own sizes (10 s loads, a limit of 200/s, B at 100/s, A at 10× the limit); the rounds are the caller's.
        run_tenants_bench(rounds=runs)
    elif suite == "replay":
        from benchmarks.replay import run_replay_bench

        run_replay_bench(events=events, runs=runs, batch_size=batch_size, workers=workers)
    else:
        from benchmarks.commands import run_bench

        run_bench(clients=clients, commands=commands, projects=projects, backlog=backlog, runs=runs)
