"""``blackboard doctor``: is this installation able to run, and is it running well?"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
from rich.console import Console
from rich.markup import escape

from blackboard.cli.base import Format, app, console, load_settings, postgres_url
from blackboard.cli.render import checks_table, settings_table


@app.command
async def doctor(*, timeout: float = 3.0, stuck_seconds: float = 60.0, format: Format = "text",
                 data_dir: Path | None = None) -> None:
    """Check the configuration, the broker, PostgreSQL and Redis, the topics, the migrations and the projection.

    Each check waits at most --timeout seconds; the projection counts as stuck when it has lag and its stored
    offset has not moved for --stuck-seconds. Exit code 1, with the list of problems, when any check fails.
    """
    from pydantic import ValidationError

    from blackboard.connect import log_factory
    from blackboard.ops import doctor as checkup

    try:
        settings = load_settings(data_dir=data_dir)
    except ValidationError as exc:
        report = checkup.invalid_settings(exc)
    else:
        url = postgres_url(settings)
        report = await checkup.diagnose(settings, url, open_log=log_factory(settings, url), timeout=timeout,
                                        stuck_after=stuck_seconds)
    if format == "json":
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        Console(highlight=False).print(settings_table(report), checks_table(report))
    if not report.ok:
        console.print(f"[red]{len(report.problems)} problem(s):[/]")
        for check in report.problems:
            console.print(f"[red]- {escape(check.name)}: {escape(check.detail)}[/]")
        raise SystemExit(1)
