"""``blackboard up`` with its embedded PostgreSQL: every stopping signal stops the server it started, a
server left by a killed process is taken over, and a server that dies is started again."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

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
