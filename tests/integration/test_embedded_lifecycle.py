"""``blackboard up`` with its embedded PostgreSQL: every stopping signal stops the server it started, a
server left by a killed process is taken over, and a server that dies is started again."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import Process
from tests.services import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    """One data directory for the module: the embedded server's first start (initdb) is the slow part."""
    # Under /tmp, not under the home directory: the server may run as its own system user.
    path = Path(tempfile.mkdtemp(prefix="blackboard-up-"))
    os.chmod(path, 0o755)
    yield path
    from blackboard.embedded import stop_embedded_postgres

    stop_embedded_postgres(path / "postgres")
    shutil.rmtree(path, ignore_errors=True)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    return {**env, "BLACKBOARD_DATA_DIR": str(data_dir), "BLACKBOARD_PARTITIONS": "2"}


def postmaster(data_dir: Path) -> int | None:
    """The pid of the embedded PostgreSQL of ``data_dir`` while it runs, else ``None``."""
    try:
        pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT])
async def test_every_stopping_signal_stops_the_embedded_postgres(data_dir: Path, sig: signal.Signals) -> None:
    server = Process(_env(data_dir), free_port())
    await server.ready(timeout=120)
    pid = postmaster(data_dir)
    assert pid is not None
    server.proc.send_signal(sig)
    code = server.proc.wait(30)
    output = server.output()
    server.log.close()
    assert code == 0, f"{sig.name}: exit code {code}\n{output}"
    assert _gone(pid), f"{sig.name} left the embedded PostgreSQL {pid} running\n{output}"


async def test_a_server_left_by_a_killed_process_is_taken_over_and_stopped(data_dir: Path) -> None:
    first = Process(_env(data_dir), free_port())
    await first.ready(timeout=120)
    left = postmaster(data_dir)
    first.kill9()
    assert left is not None and postmaster(data_dir) == left, "SIGKILL cannot stop it: it is left running"

    second = Process(_env(data_dir), free_port())
    await second.ready(timeout=120)
    assert postmaster(data_dir) == left, "the left-over server is reused, not started twice"
    second.stop()
    assert second.proc.returncode == 0
    assert _gone(left), "the process that took the left-over server over stops it"


async def _load(url: str, acked: dict[str, int], stop: asyncio.Event, worker: int) -> None:
    """Costs on three projects until ``stop``; what was answered 200 goes to ``acked`` (command id → project)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        n = 0
        while not stop.is_set():
            n += 1
            cid, project = f"w{worker}-{n}", n % 3
            body = {"type": "project.add_cost", "stream": f"project:p-{project}", "command_id": cid,
                    "payload": {"amount": "0.01", "reason": "load"}}
            try:
                r = await client.post("/v1/commands", json=body)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
                continue
            assert r.status_code < 500 or r.status_code == 503, r.text
            if r.status_code == 200:
                acked[cid] = project


async def test_a_killed_embedded_postgres_is_restarted_under_load(data_dir: Path) -> None:
    server = Process({**_env(data_dir), "BLACKBOARD_TOPIC_PREFIX": "recovery."}, free_port())
    try:
        await server.ready(timeout=120)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for p in range(3):
                body = {"type": "project.create", "stream": f"project:p-{p}",
                        "payload": {"title": "t", "currency": "EUR", "budget_total": "100000"}}
                assert (await client.post("/v1/commands", json=body)).status_code in (200, 409)
            acked: dict[str, int] = {}
            stop = asyncio.Event()
            load = [asyncio.create_task(_load(server.url, acked, stop, w)) for w in range(6)]
            await asyncio.sleep(1.0)
            pid = postmaster(data_dir)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            recovered = None
            while time.monotonic() - killed_at < 30:
                assert (await client.get("/health/live")).status_code == 200, "live while it recovers"
                if (await client.get("/health/ready")).status_code == 200 and postmaster(data_dir) not in (None, pid):
                    recovered = time.monotonic() - killed_at
                    break
                await asyncio.sleep(0.2)
            assert recovered is not None, f"not ready 30 s after the kill\n{server.output()}"
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*load)
            assert len(acked) > 20
            # Written and read after the restart: the deciders, the projector and the reads all work again.
            for cid, project in acked.items():  # nothing acknowledged was lost: each answers its first outcome
                body = {"type": "project.add_cost", "stream": f"project:p-{project}", "command_id": cid,
                        "payload": {"amount": "0.01", "reason": "load"}}
                again = await client.post("/v1/commands", json=body)
                assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true", again.text
            made = await client.post("/v1/commands", json={
                "type": "project.add_cost", "stream": "project:p-0", "payload": {"amount": "0.01", "reason": "after"}})
            assert made.status_code == 200, made.text
            read = await client.get("/v1/projects/p-0", params={"consistent_with": made.json()["position"]})
            assert read.status_code == 200 and read.json()["version"] == made.json()["version"], read.text
    finally:
        text = _stop(server)
    # A connection the dying server left mid-error is a lost connection (LogUnavailable), not an unknown failure.
    unclassified = [line for line in text.splitlines() if '"error": "InternalClientError(' in line
                    and any(f'"event": "{e}' in line for e in ("owner.", "processes.", "intake."))]
    assert not unclassified, unclassified[:3]


def _stop(server: Process) -> str:
    """Stop ``server`` (SIGTERM) and answer everything it logged."""
    server.terminate()
    server.proc.wait(30)
    server.log.seek(0)
    text = server.log.read().decode(errors="replace")
    server.log.close()
    return text
