"""``blackboard migrate`` over a real PostgreSQL: every schema made once, idempotent, safe to run concurrently,
and databases made before the one schema runner adopted in place."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import asyncpg
import msgspec
from pydantic import SecretStr

from blackboard.app import topics_of
from blackboard.config import Settings
from blackboard.connect import opened_log
from blackboard.events.postgres.blobs import BLOB_SCHEMA
from blackboard.events.postgres.log import LOG_SCHEMA
from blackboard.migrate import migrate_all
from blackboard.projector.generations import CONTROL_SCHEMA
from blackboard.projector.migrate import READ_MODELS

LOG, BLOBS, CONTROL, READ = "blackboard_log", "blackboard_blobs", "blackboard_control", "blackboard"
#: Every schema of the PostgreSQL-log installation, its files, and its bookkeeping table.
EXPECTED = {LOG: LOG_SCHEMA, BLOBS: BLOB_SCHEMA, CONTROL: CONTROL_SCHEMA, READ: READ_MODELS}


def _names(schema: str) -> list[str]:
    return [m.name for m in EXPECTED[schema].migrations()]


async def _migrate_cli(pg_url: str, **env: str) -> dict[str, list[str]]:
    """``blackboard migrate --format json`` in a subprocess: each schema's files applied by this run."""
    report = await _migrate_report({"BLACKBOARD_POSTGRES_URL": pg_url, **env})
    return {s["schema"]: s["applied"] for s in report["schemas"]}


async def _migrate_report(env: dict[str, str]) -> dict[str, Any]:
    """``blackboard migrate --format json`` in a subprocess with ``env`` as its only settings: its report."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    argv = [sys.executable, "-m", "blackboard.cli", "migrate", "--format", "json"]
    done = await asyncio.to_thread(subprocess.run, argv, env={**clean, **env}, capture_output=True,
                                   text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = msgspec.json.decode(done.stdout)
    return report


async def _recorded(pg_url: str) -> dict[str, list[str]]:
    """What each schema's bookkeeping table records, in version order."""
    conn = await asyncpg.connect(pg_url)
    try:
        return {schema: [r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}"."{files.table}" '
                                                               "ORDER BY version")]
                for schema, files in EXPECTED.items()}
    finally:
        await conn.close()


async def _catalog(pg_url: str) -> list[tuple[str, str]]:
    """Every table and index of the project's schemas."""
    conn = await asyncpg.connect(pg_url)
    try:
        rows = await conn.fetch("SELECT n.nspname, c.relname FROM pg_class c "
                                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'i') ORDER BY 1, 2",
                                list(EXPECTED))
        return [(r[0], r[1]) for r in rows]
    finally:
        await conn.close()


async def test_migrate_applies_every_schema_once_and_a_second_run_changes_nothing(pg_url: str) -> None:
    first = await _migrate_cli(pg_url)
    assert first == {schema: _names(schema) for schema in EXPECTED}
    tables = await _catalog(pg_url)
    assert {(LOG, "records"), (LOG, "partition_leases"), (BLOBS, "blobs"), (CONTROL, "generations"),
            (READ, "projects")} <= set(tables)

    second = await _migrate_cli(pg_url)
    assert second == {schema: [] for schema in EXPECTED}
    assert await _catalog(pg_url) == tables
    assert await _recorded(pg_url) == {schema: _names(schema) for schema in EXPECTED}


async def test_two_concurrent_runs_both_succeed_and_apply_each_file_once(pg_url: str) -> None:
    a, b = await asyncio.gather(_migrate_cli(pg_url), _migrate_cli(pg_url))
    for schema in EXPECTED:
        assert not set(a[schema]) & set(b[schema]), f"{schema}: a file applied by both runs"
        assert sorted(a[schema] + b[schema]) == _names(schema)
    assert await _recorded(pg_url) == {schema: _names(schema) for schema in EXPECTED}


async def test_with_the_kafka_log_no_log_schema_is_made(pg_url: str, kafka_bootstrap: str, topic_prefix: str) -> None:
    # A reachable broker: with one configured, migrate waits for it and creates the topics (below).
    applied = await _migrate_cli(pg_url, BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
                                 BLACKBOARD_TOPIC_PREFIX=topic_prefix)
    assert set(applied) == {BLOBS, CONTROL, READ}
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT to_regnamespace($1)", LOG) is None
    finally:
        await conn.close()


async def test_a_database_made_before_the_runner_is_adopted_and_keeps_its_rows(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        # What the earlier start-up code made: the log's two files found by looking at the catalog,
        # CREATE ... IF NOT EXISTS for the leases, the blobs and the generations, and no record of any.
        for schema in (LOG, BLOBS, CONTROL):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{LOG}"')
        for m in LOG_SCHEMA.migrations():
            await conn.execute(m.sql)
        await conn.execute("INSERT INTO topics (topic, partitions) VALUES ('events', 1)")
        await conn.execute(f'SET search_path TO "{BLOBS}"')
        await conn.execute(BLOB_SCHEMA.migrations()[0].sql)
        await conn.execute("INSERT INTO blobs (sha256, size, encoding, data) VALUES ($1, 1, 'identity', 'x')", "a" * 64)
        await conn.execute(f'SET search_path TO "{CONTROL}"')
        await conn.execute(CONTROL_SCHEMA.migrations()[0].sql)
        await conn.execute("INSERT INTO generations (number, schema, state) VALUES (0, $1, 'live')", READ)
        await conn.execute("RESET search_path")

        report = await migrate_all(Settings(), pg_url)
        applied = {s.schema: s.applied for s in report.schemas}
        # 0001 and 0002 of the log are recorded as found; the others are made IF NOT EXISTS.
        assert applied == {LOG: ["0003_membership"], BLOBS: ["0001_blobs"], CONTROL: ["0001_generations"],
                           READ: _names(READ)}
        assert await _recorded(pg_url) == {schema: _names(schema) for schema in EXPECTED}
        assert await conn.fetchval(f'SELECT count(*) FROM "{LOG}".topics') == 1
        assert await conn.fetchval(f'SELECT count(*) FROM "{BLOBS}".blobs') == 1
    finally:
        await conn.close()


async def test_migrate_creates_the_topics_on_a_broker_as_the_roles_would(pg_url: str, kafka_bootstrap: str,
                                                                          topic_prefix: str) -> None:
    """The compose file's and the k8s Job's promise: after `migrate`, every topic exists before a role starts."""
    env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "BLACKBOARD_TOPIC_PREFIX": topic_prefix, "BLACKBOARD_PARTITIONS": "3"}
    settings = Settings(postgres_url=SecretStr(pg_url), kafka_bootstrap_servers=kafka_bootstrap,
                        topic_prefix=topic_prefix)
    expected = list(topics_of(settings))
    for _ in range(2):  # the second run finds them and changes nothing
        report = await _migrate_report(env)
        assert (report["topics"], report["partitions"]) == (expected, 3)
        async with opened_log(settings, pg_url) as log:
            assert [await log.partition_count(t) for t in expected] == [3] * len(expected)
            events = await log.describe_topic(settings.events_topic)
            assert events.config is not None and events.config["retention.ms"] == "-1"
