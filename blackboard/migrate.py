"""``blackboard migrate``: every PostgreSQL schema Blackboard owns, created or upgraded by the one schema runner,
and, on a Kafka broker, every topic.

The PostgreSQL log's (with its membership leases; only when the log is PostgreSQL), the blob
store's, the read models' control schema (generations) and the live generation's read models.
With a broker configured, the topics the roles would create at start (``ensure_topics``), with
the same partitions, replication and configuration. Each process also applies what it needs at
start; this is the same thing run alone, e.g. as a deployment's job before the roles start.
Idempotent: a second run applies nothing and leaves existing topics as they are.
"""

from __future__ import annotations

import asyncpg
import msgspec

from blackboard.config import Settings
from blackboard.events.postgres.blobs import BLOB_SCHEMA
from blackboard.events.postgres.log import LOG_SCHEMA
from blackboard.events.postgres.schema import migrate
from blackboard.projector import generations
from blackboard.projector.migrate import READ_MODELS


class SchemaMigrated(msgspec.Struct, frozen=True):
    """One schema: what it holds, and the files this run applied to it (``[]``: it was up to date)."""

    schema: str
    holds: str
    applied: list[str]


class MigrateReport(msgspec.Struct, frozen=True):
    """The schemas, and the Kafka topics ensured (created when missing) with their partition count."""

    schemas: list[SchemaMigrated]
    topics: list[str] = msgspec.field(default_factory=list)
    partitions: int | None = None


async def migrate_all(settings: Settings, postgres_url: str) -> MigrateReport:
    """Apply every schema's missing files, in the order the roles need them; report what was applied."""
    conn = await asyncpg.connect(postgres_url)
    try:
        done: list[SchemaMigrated] = []
        if not settings.kafka_bootstrap_servers:
            applied = await migrate(conn, settings.log_schema, LOG_SCHEMA)
            done.append(SchemaMigrated(settings.log_schema, "log", applied))
        done.append(SchemaMigrated(settings.blob_schema, "blobs",
                                   await migrate(conn, settings.blob_schema, BLOB_SCHEMA)))
        base = settings.read_schema
        done.append(SchemaMigrated(generations.control_schema(base), "generations",
                                   await generations.ensure(conn, base)))
        live = await generations.live(conn, base)
        done.append(SchemaMigrated(live.schema, "read models", await migrate(conn, live.schema, READ_MODELS)))
    finally:
        await conn.close()
    if not settings.kafka_bootstrap_servers:
        return MigrateReport(done)
    topics, partitions = await _ensure_kafka_topics(settings, postgres_url)
    return MigrateReport(done, topics, partitions)


async def _ensure_kafka_topics(settings: Settings, postgres_url: str) -> tuple[list[str], int]:
    """Create the topics the roles use, as they would at start; their names and partition count."""
    from blackboard.app import ensure_topics, topics_of  # the roles' wiring: loaded only with a broker
    from blackboard.connect import opened_log

    async with opened_log(settings, postgres_url) as log:
        partitions = await ensure_topics(log, settings)
    return list(topics_of(settings)), partitions

