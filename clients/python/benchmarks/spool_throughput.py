"""How fast the offline spool takes commands while the server is down, and delivers them once it is up.

    python clients/python/benchmarks/spool_throughput.py --url http://127.0.0.1:8080 --count 1000

Spools ``--count`` commands (``project.add_cost`` over ``--streams`` projects, created first) to a
loopback port nothing listens on, each ``send`` returning once the command is fsync'd; then a client of
``--url`` delivers the spool in order. Prints commands/s for both, with the machine's fsync as the bound
of the first and the server's per-command latency of the second (``--concurrency`` streams at a time).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
import uuid
from pathlib import Path

from blackboard_client import Client, Spooled


def dead_url() -> str:
    """A loopback URL whose port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def spool(path: Path, count: int, streams: int, run: str) -> float:
    with Client(dead_url(), spool=path, deadline=1, flush_interval=3600) as bb:
        began = time.perf_counter()
        for i in range(streams):
            bb.send("project.create", f"project:{run}-{i}",
                    {"title": "bench", "currency": "EUR", "budget_total": "1000000.00"})
        for i in range(count - streams):
            answer = bb.send("project.add_cost", f"project:{run}-{i % streams}", {"amount": "0.01", "reason": "b"})
            assert isinstance(answer, Spooled)
        return count / (time.perf_counter() - began)


def flush(path: Path, url: str, count: int, concurrency: int) -> float:
    with Client(url, spool=path, flush_interval=3600, flush_concurrency=concurrency) as bb:
        began = time.perf_counter()
        assert bb.flush() and not bb.spooled() and not bb.rejected()
        return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="a running server to deliver to")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=1, help="streams delivered at once (flush_concurrency)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.db"
        run = uuid.uuid4().hex[:8]
        spooled = spool(path, args.count, args.streams, run)
        flushed = flush(path, args.url, args.count, args.concurrency)
    print(f"{args.count} commands over {args.streams} streams: spooled {spooled:.0f}/s (each fsync'd before send "
          f"returned), flushed {flushed:.0f}/s ({args.concurrency} stream(s) at a time, each in order)")


if __name__ == "__main__":
    main()
