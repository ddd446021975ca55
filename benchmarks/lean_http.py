"""A lean HTTP/1.1 load generator: keep-alive connections on asyncio streams, spread over worker processes.

Why not httpx: measured against the same server, httpx spent more CPU per request than the server it
drove (324 to 590 commands/s where a C generator measured 925), so the figures were the client's. This
one writes a prepared request and reads one ``Content-Length`` answer per round trip, and each worker
process reports its own CPU time, so every figure can say how much of the machine the load took.

Two modes: closed loop (each connection sends its next request when the last is answered: the peak
rate) and open loop (requests scheduled at a fixed rate; latency counted from the scheduled time, so
a stalled server cannot hide its stall by slowing the generator down — no coordinated omission).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

import msgspec


class Load(msgspec.Struct, frozen=True):
    """What one run sends: ``kind`` (``add_cost`` or ``get_project``) over ``projects``, to ``host:port``."""

    host: str
    port: int
    kind: str
    projects: list[str]
    connections: int
    #: Closed loop: this many requests in all (0 with ``seconds``: as many as fit in ``seconds``).
    #: Open loop: the run's length comes from ``seconds``.
    requests: int = 0
    #: Open loop: requests per second in all (0: closed loop).
    rate: float = 0.0
    seconds: float = 0.0
    #: An API key sent as ``Authorization: Bearer <key>`` (none: no credential).
    key: str = ""
    #: A wall-clock time (``time.time()``) at which every worker starts, its connections already open, so that
    #: loads run from separate calls begin together (0: each worker starts when it is ready).
    start_at: float = 0.0


class Result(msgspec.Struct):
    """What the workers saw: latencies in seconds, answers by status, wall time, and their CPU seconds;
    ``codes``: the status of each answer, in the order of ``latencies``."""

    latencies: list[float]
    statuses: dict[int, int]
    elapsed: float
    cpu_seconds: float
    codes: list[int] = msgspec.field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float, status: int | None = None) -> float:
        """The ``q`` quantile of the latencies (of the answers of ``status`` only, when given)."""
        chosen = self.latencies if status is None else [x for x, c in zip(self.latencies, self.codes, strict=True)
                                                        if c == status]
        ordered = sorted(chosen)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(load: Load, processes: int = 2) -> Result:
    """Run ``load`` split evenly over ``processes`` worker processes; their results merged."""
    shares = [_share(load, processes, i) for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_work, [msgspec.msgpack.encode(s) for s in shares]))
    results = [msgspec.msgpack.decode(p, type=Result) for p in parts]
    statuses: Counter[int] = Counter()
    for r in results:
        statuses.update(r.statuses)
    return Result([x for r in results for x in r.latencies], dict(statuses), max(r.elapsed for r in results),
                  sum(r.cpu_seconds for r in results), [c for r in results for c in r.codes])


def _share(load: Load, processes: int, index: int) -> Load:
    connections = load.connections // processes + (1 if index < load.connections % processes else 0)
    requests = load.requests // processes + (1 if index < load.requests % processes else 0)
    return msgspec.structs.replace(load, connections=max(1, connections), requests=requests,
                                   rate=load.rate / processes)


def _work(encoded: bytes) -> bytes:
    """One worker process: run its share on its own event loop (uvloop when installed)."""
    load = msgspec.msgpack.decode(encoded, type=Load)
    try:
        import uvloop

        runner: Callable[..., Result] = uvloop.run
    except ImportError:
        runner = asyncio.run
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = runner(_drive(load))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return msgspec.msgpack.encode(result)


def request_bytes(load: Load, rng: random.Random) -> bytes:
    """One prepared HTTP/1.1 request of ``load.kind`` for a random project."""
    project = rng.choice(load.projects)
    auth = f"Authorization: Bearer {load.key}\r\n" if load.key else ""
    if load.kind == "get_project":
        return f"GET /v1/projects/{project} HTTP/1.1\r\nHost: {load.host}\r\n{auth}\r\n".encode()
    body = msgspec.json.encode({"type": "project.add_cost", "stream": f"project:{project}",
                                "payload": {"amount": "0.01", "reason": "bench"}})
    head = (f"POST /v1/commands HTTP/1.1\r\nHost: {load.host}\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _drive(load: Load) -> Result:
    latencies: list[float] = []
    codes: list[int] = []
    connections = [await asyncio.open_connection(load.host, load.port) for _ in range(load.connections)]
    if load.start_at and (wait := load.start_at - time.time()) > 0:
        await asyncio.sleep(wait)
    start = time.perf_counter()
    slots: Iterator[float | None]
    if load.rate:
        interval = 1.0 / load.rate
        slots = iter([start + i * interval for i in range(int(load.rate * load.seconds))])
    elif not load.requests and load.seconds:
        slots = _until(start + load.seconds)
    else:
        slots = iter([None] * load.requests)
    await asyncio.gather(*(_connection(load, streams, slots, latencies, codes) for streams in connections))
    return Result(latencies, dict(Counter(codes)), time.perf_counter() - start, 0.0, codes)


def _until(deadline: float) -> Iterator[None]:
    """Closed-loop slots until ``deadline`` (``perf_counter``): the connections share it, so all stop together."""
    while time.perf_counter() < deadline:
        yield None


async def _connection(load: Load, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                      slots: Iterator[float | None], latencies: list[float], codes: list[int]) -> None:
    rng = random.Random()
    reader, writer = streams
    try:
        for due in slots:
            if due is not None and (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            sent = due if due is not None else time.perf_counter()
            writer.write(request_bytes(load, rng))
            codes.append(await _answer(reader))
            latencies.append(time.perf_counter() - sent)
    finally:
        writer.close()


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one response (status line, headers, ``Content-Length`` body); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status
