"""The ``blackboard`` command: run the service, read the log, inspect and verify it, measure.

Argument parsing only: each module below registers one group of commands on ``app`` and calls a
library (``blackboard.ops``, the roles' start-up) for the work. A new command is a new module here,
imported below.
"""

from __future__ import annotations

# Imported for their commands, which they register on ``app``.
from blackboard.cli import bench, doctor, inspect, mcp, migrate, repair, runs, serve, worker
from blackboard.cli.base import app

__all__ = ["app", "bench", "doctor", "inspect", "main", "mcp", "migrate", "repair", "runs", "serve", "worker"]


def main() -> None:
    """The ``blackboard`` command. Logs go to stderr, warnings and worse (``up`` logs from info): stdout
    is each command's output, a table or a JSON document another program may read."""
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    app()
