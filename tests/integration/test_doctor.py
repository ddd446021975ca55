"""``blackboard doctor`` over real services: a healthy installation passes, each kind of breakage is named."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import msgspec
import pytest

from blackboard.app import ensure_topics
from blackboard.config import Settings
from blackboard.connect import opened_log, read_pool
from blackboard.ops.lag import lag
from blackboard.ops.offsets import end_offsets
from blackboard.projector.migrate import migrate, migrations
from tests.integration.harness import command, running, settings_for
from tests.services import free_port

PROJECT = {"title": "Trailer", "currency": "EUR", "budget_total": "100.00"}


@pytest.fixture(params=["postgres", "kafka"])
def settings(request: pytest.FixtureRequest, pg_url: str, topic_prefix: str, redis_url: str) -> Settings:
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return settings_for(request.param, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka, redis_url=redis_url)


def _url(settings: Settings) -> str:
    assert settings.postgres_url is not None
    return settings.postgres_url.get_secret_value()


def _env(settings: Settings, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    env.update(BLACKBOARD_POSTGRES_URL=_url(settings), BLACKBOARD_TOPIC_PREFIX=settings.topic_prefix,
               BLACKBOARD_PARTITIONS=str(settings.partitions))
    if settings.kafka_bootstrap_servers:
        env["BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    if settings.redis_url is not None:
        env["BLACKBOARD_REDIS_URL"] = settings.redis_url.get_secret_value()
    return env | overrides


async def _doctor(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``blackboard doctor --format json ARGS`` in a subprocess, and its JSON report."""
    done = await asyncio.to_thread(subprocess.run,
                                   [sys.executable, "-m", "blackboard.cli", "doctor", "--format", "json", *args],
                                   env=env, capture_output=True, text=True, timeout=90)
    doc: dict[str, Any] = msgspec.json.decode(done.stdout) if done.stdout else {}
    return done, doc


def _by_name(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in doc["checks"]}


async def _traffic_projected(settings: Settings) -> None:
    """Two commands through the running service, then wait until the projection has caught up."""
    async with running(settings) as (client, runtime):
        for stream in ("project:p-1", "project:p-2"):
            assert (await command(client, "project.create", stream, PROJECT)).status_code == 200
        assert runtime.log is not None and runtime.pool is not None
        deadline = time.monotonic() + 15
        while (await lag(runtime.log, runtime.pool, settings)).total:
            assert time.monotonic() < deadline, "the projector did not catch up"
            await asyncio.sleep(0.1)


async def test_a_healthy_installation_passes(settings: Settings) -> None:
    await _traffic_projected(settings)
    done, doc = await _doctor(_env(settings))
    assert done.returncode == 0, done.stderr + done.stdout
    checks = _by_name(doc)
    assert doc["ok"] is True
    assert {c["status"] for c in doc["checks"]} == {"ok"}, doc["checks"]
    broker = "broker" if settings.kafka_bootstrap_servers else "log (PostgreSQL)"
    expected = {"configuration", broker, "postgres", "redis", f"topic {settings.events_topic}",
                f"topic {settings.commands_topic}", f"topic {settings.results_topic}",
                f"retention {settings.events_topic}", "migrations", "projection"}
    if settings.kafka_bootstrap_servers:  # the PostgreSQL log keeps no replicas of its own
        expected |= {f"replication {t}" for t in (settings.events_topic, settings.commands_topic,
                                                   settings.results_topic)}
    assert set(checks) == expected
    assert checks["projection"]["detail"] == "caught up (lag 0)"
    shown = {s["name"]: s for s in doc["settings"]}
    assert set(shown) == set(Settings.model_fields)
    assert shown["postgres_url"]["secret"] is True and shown["partitions"]["value"] == "4"
    password = urlsplit(_url(settings)).password
    if password:
        assert password not in done.stdout, "a secret leaked"
        assert ":***@" in shown["postgres_url"]["value"]


async def test_a_broken_installation_lists_each_problem(settings: Settings) -> None:
    """Events topic with 3 partitions where 4 are configured, a migration row gone, Redis on an unused port."""
    async with opened_log(settings, _url(settings)) as log:
        await log.create_topic(settings.events_topic, 3, config={"retention.ms": "-1"})
    async with read_pool(settings, _url(settings)) as pool:
        await migrate(pool, settings.read_schema)
        latest = migrations()[-1]
        await pool.execute("DELETE FROM schema_migrations WHERE version = $1", latest.version)
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    done, doc = await _doctor(_env(settings, BLACKBOARD_REDIS_URL=dead_redis), "--timeout", "2")
    assert done.returncode == 1, done.stderr
    checks = _by_name(doc)
    failed = {name for name, c in checks.items() if c["status"] == "fail"}
    assert failed == {f"topic {settings.events_topic}", "migrations", "redis"}, doc["checks"]
    assert checks[f"topic {settings.events_topic}"]["detail"] == "has 3 partitions; BLACKBOARD_PARTITIONS is 4"
    assert checks["migrations"]["detail"] == f"schema {settings.read_schema!r} lacks {latest.name}"
    assert checks["redis"]["detail"].startswith("unreachable at redis://127.0.0.1:")
    assert checks[f"topic {settings.commands_topic}"]["status"] == "warn", "missing: `blackboard up` creates it"
    assert "3 problem(s)" in done.stderr
    for name in failed:
        assert f"- {name}: " in done.stderr


async def test_replication_is_held_to_the_settings(kafka_bootstrap: str, pg_url: str, topic_prefix: str) -> None:
    """Topics made with one replica pass while the settings ask for one, and fail once they ask for three."""
    settings = settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka_bootstrap,
                            kafka_replication_factor=1, kafka_min_insync_replicas=1)
    async with opened_log(settings, _url(settings)) as log:
        await ensure_topics(log, settings)
    topics = (settings.events_topic, settings.commands_topic, settings.results_topic)
    names = {f"replication {t}" for t in topics}
    _, doc = await _doctor(_env(settings, BLACKBOARD_KAFKA_REPLICATION_FACTOR="1",
                                BLACKBOARD_KAFKA_MIN_INSYNC_REPLICAS="1"))
    checks = _by_name(doc)
    assert {checks[n]["status"] for n in names} == {"ok"}, doc["checks"]
    assert checks[f"replication {settings.events_topic}"]["detail"] == "1 replica(s), min.insync.replicas 1"
    done, doc = await _doctor(_env(settings, BLACKBOARD_KAFKA_REPLICATION_FACTOR="3",
                                   BLACKBOARD_KAFKA_MIN_INSYNC_REPLICAS="2"))
    assert done.returncode == 1, done.stderr
    checks = _by_name(doc)
    assert {checks[n]["status"] for n in names} == {"fail"}, doc["checks"]
    assert checks[f"replication {settings.commands_topic}"]["detail"] == (
        "replication factor is 1; the settings ask for 3 (BLACKBOARD_KAFKA_REPLICATION_FACTOR); "
        "min.insync.replicas is 1; the settings ask for 2 (BLACKBOARD_KAFKA_MIN_INSYNC_REPLICAS)")


async def test_an_unreachable_broker_and_an_unmigrated_schema_are_both_named(pg_url: str, topic_prefix: str) -> None:
    port = free_port()
    settings = settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=f"127.0.0.1:{port}")
    started = time.monotonic()
    done, doc = await _doctor(_env(settings), "--timeout", "3")
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 60
    checks = _by_name(doc)
    assert checks["broker"]["status"] == "fail"
    assert checks["broker"]["detail"].startswith(f"unreachable at 127.0.0.1:{port}")
    assert checks["migrations"] == {"name": "migrations", "status": "fail",
                                    "detail": f"schema {settings.read_schema!r} was never migrated "
                                              "(`blackboard up` does)"}
    assert checks["topics"]["status"] == "skip" and checks["postgres"]["status"] == "ok"
    assert f"- broker: unreachable at 127.0.0.1:{port}" in done.stderr and "- migrations: " in done.stderr


async def test_a_projection_whose_offset_does_not_move_while_behind_is_stuck(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings, roles=frozenset({"command"})) as (client, runtime):
        assert (await command(client, "project.create", "project:p-1", PROJECT)).status_code == 200
        assert runtime.log is not None
        ends = await end_offsets(runtime.log, settings.events_topic)
    [(partition, end)] = [(p, e) for p, e in ends.items() if e]
    conn = await asyncpg.connect(_url(settings))
    try:
        await conn.execute(f'INSERT INTO "{settings.read_schema}".projection_offsets '
                           "(projection, topic, partition, next_offset, updated_at) "
                           "VALUES ('main', $1, $2, 0, now() - interval '2 minutes')", settings.events_topic, partition)
    finally:
        await conn.close()
    done, doc = await _doctor(_env(settings), "--stuck-seconds", "60")
    assert done.returncode == 1, done.stderr
    projection = _by_name(doc)["projection"]
    assert projection["status"] == "fail"
    assert projection["detail"].startswith(f"stuck for over 60 s: partition {partition}: lag {end}, offset stored 12")


async def test_settings_that_do_not_validate_are_each_reported(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    done, doc = await _doctor(_env(settings, BLACKBOARD_PARTITIONS="0", BLACKBOARD_PORT="99999"))
    assert done.returncode == 1
    [check] = doc["checks"]
    assert check["name"] == "configuration" and check["status"] == "fail"
    assert "BLACKBOARD_PARTITIONS" in check["detail"] and "BLACKBOARD_PORT" in check["detail"]


async def test_the_text_report_is_a_table(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "blackboard.cli", "doctor"],
                                   env=_env(settings, COLUMNS="200"), capture_output=True, text=True, timeout=90)
    assert done.returncode == 1, "never migrated"
    assert "checks:" in done.stdout and "migrations" in done.stdout and "BLACKBOARD_POSTGRES_URL" in done.stdout
