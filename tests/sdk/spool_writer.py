"""Spools commands to a server that is down, printing each command id once ``send`` returned ``Spooled``.

Run by ``test_spool.py`` in a process of its own, which it kills with SIGKILL part way:
``python spool_writer.py <url> <spool path> <first> <last>``.
"""

from __future__ import annotations

import sys
import time

from blackboard_client import Client, Spooled


def command(i: int) -> tuple[str, str, dict[str, str]]:
    """The ``i``-th command of the test: four projects created, then costs spread over them."""
    stream = f"project:sp-{i % 4}"
    if i < 4:
        return "project.create", stream, {"title": f"sp-{i}", "currency": "EUR", "budget_total": "1000.00"}
    return "project.add_cost", stream, {"amount": "0.01", "reason": f"cost-{i}"}


def main(url: str, path: str, first: int, last: int, pause: float) -> None:
    with Client(url, spool=path, deadline=2, flush_interval=3600) as bb:
        for i in range(first, last):
            type_, stream, payload = command(i)
            answer = bb.send(type_, stream, payload, command_id=f"spool-{i}")
            assert isinstance(answer, Spooled), answer
            sys.stdout.write(f"{answer.command_id}\n")
            sys.stdout.flush()
            time.sleep(pause)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
