"""Fixtures shared by the integration tests (the services themselves are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from blackboard.config import Settings
from tests.integration.harness import settings_for


@pytest.fixture(params=["postgres", "kafka"])
def settings(request: pytest.FixtureRequest, pg_url: str, topic_prefix: str, redis_url: str,
             redis_prefix: str) -> Settings:
    """Kafka (tansu) + PostgreSQL + Redis, and the PostgreSQL log + PostgreSQL + Redis.

    A module that needs other settings (no Redis, one engine, a seeded topic) defines its own.
    """
    engine: str = request.param
    kafka = request.getfixturevalue("kafka_bootstrap") if engine == "kafka" else None
    return settings_for(engine, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka,
                        redis_url=redis_url, redis_prefix=redis_prefix)
