"""``blackboard migrate``: create or upgrade every PostgreSQL schema, then exit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from blackboard.cli.base import Format, app, load_settings, postgres_url, show, table

if TYPE_CHECKING:
    from blackboard.migrate import MigrateReport


@app.command
async def migrate(*, format: Format = "text", data_dir: Path | None = None) -> None:
    """Create or upgrade every PostgreSQL schema Blackboard owns (log, blobs, generations, read models); idempotent."""
    from blackboard.migrate import migrate_all
    from blackboard.startup import wait_for_dependencies

    settings = load_settings(data_dir=data_dir)
    url = postgres_url(settings)
    # A job started with (or before) its database waits for it, as the roles do.
    await wait_for_dependencies(settings, url, only=frozenset({"postgres"}))
    show(await migrate_all(settings, url), format, _migrated_table)


def _migrated_table(report: MigrateReport) -> Table:
    result = table("migrate", "schema", "holds", "applied")
    for s in report.schemas:
        result.add_row(s.schema, s.holds, ", ".join(s.applied) or "up to date")
    return result
