"""Fixtures over real services (see ``tests/services.py``): isolation by database, topic prefix, key prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from blackboard.events.log import PartitionedLog
from tests.services import EmbeddedPostgres, RedisServer, Tansu


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a Kafka-protocol broker: ``BLACKBOARD_TEST_KAFKA`` or a fresh tansu."""
    given = os.environ.get("BLACKBOARD_TEST_KAFKA")
    if given:
        yield given
        return
    broker = Tansu()
    yield broker.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    given = os.environ.get("BLACKBOARD_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    server = EmbeddedPostgres()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    given = os.environ.get("BLACKBOARD_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer()
    server.start()
    yield server.url
    server.stop()


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


@pytest.fixture
async def pg_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh database of its own for each test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield _with_database(postgres_server_url, name)
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def redis_url(redis_server: str) -> str:
    return redis_server


@pytest.fixture
def redis_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=["postgres", "kafka"])
async def log(request: pytest.FixtureRequest, pg_url: str) -> AsyncIterator[PartitionedLog]:
    """A started log of each engine: one contract suite, every engine."""
    engine: PartitionedLog
    if request.param == "kafka":
        from blackboard.events.kafka import KafkaLog

        engine = KafkaLog(request.getfixturevalue("kafka_bootstrap"))
    else:
        from blackboard.events.postgres import PostgresLog

        engine = PostgresLog(pg_url)
    await engine.start()
    yield engine
    await engine.close()
