"""The ``blackboard`` command: run the service, read the log, inspect and verify it, measure.

Argument parsing only: each module below registers one group of commands on ``app`` and calls a
library (``blackboard.ops``, the roles' start-up) for the work. A new command is a new module here,
imported below.
"""

from __future__ import annotations

from rich.markup import escape

# Imported for their commands, which they register on ``app``.
from blackboard.cli import bench, doctor, inspect, mcp, migrate, repair, runs, serve, worker
from blackboard.cli.base import app, console
from blackboard.cli.failures import CliError, SaidByTheFailureLine, unreachable
from blackboard.config import Settings

__all__ = ["app", "bench", "doctor", "inspect", "main", "mcp", "migrate", "repair", "run", "runs", "serve",
           "worker"]


def main() -> None:
    """The ``blackboard`` command. Logs go to stderr, warnings and worse (``up`` logs from info): stdout
    is each command's output, a table or a JSON document another program may read."""
    import logging

    from blackboard.logs import configure_logging

    configure_logging(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(SaidByTheFailureLine())
    run()


def run(tokens: list[str] | None = None) -> None:
    """Run the command ``tokens`` (default: the process's arguments); a service that cannot be reached, or
    another ``CliError``, is said in one line on stderr and exits 1."""
    try:
        app(tokens)
    except Exception as exc:
        line = str(exc) if isinstance(exc, CliError) else unreachable(exc, _settings_or_none())
        if line is None:
            raise
        console.print(f"[red]{escape(line)}[/]", soft_wrap=True)
        raise SystemExit(1) from None


def _settings_or_none() -> Settings | None:
    """The settings from the environment, to say what was tried; ``None`` when they do not load."""
    try:
        return Settings()
    except Exception:
        return None
