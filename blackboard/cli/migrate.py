"""``blackboard migrate``: create or upgrade every PostgreSQL schema (and, on Kafka, create the topics), then exit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from blackboard.cli.base import Format, app, load_settings, postgres_url, show, table

if TYPE_CHECKING:
    from blackboard.migrate import MigrateReport


@app.command
async def migrate(*, format: Format = "text", data_dir: Path | None = None) -> None:
    """Create or upgrade every PostgreSQL schema Blackboard owns (log, blobs, generations, read models) and, with a
    Kafka broker configured, the topics the roles use; idempotent."""
    from blackboard.migrate import migrate_all
    from blackboard.startup import wait_for_dependencies

    settings = load_settings(data_dir=data_dir)
    url = postgres_url(settings, create=True)
    # A job started with (or before) its database and broker waits for them, as the roles do.
    await wait_for_dependencies(settings, url, only=frozenset({"postgres", "kafka"}))
    show(await migrate_all(settings, url), format, _migrated_table)


def _migrated_table(report: MigrateReport) -> Table:
    result = table("migrate", "schema", "holds", "applied")
    for s in report.schemas:
        result.add_row(s.schema, s.holds, ", ".join(s.applied) or "up to date")
    for topic in report.topics:
        result.add_row(topic, "Kafka topic", f"{report.partitions} partitions (created when missing)")
    return result
