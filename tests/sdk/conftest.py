"""Fixtures of the client's tests: a real server (PostgreSQL log and read models, Redis cache) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from blackboard.app import Runtime
from blackboard.config import Settings
from tests.integration.harness import serving, settings_for


@pytest.fixture
def settings(pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> Settings:
    """One engine is enough here: the client sees the HTTP API, which is the same over either log."""
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                        redis_prefix=redis_prefix)


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, str]]:
    """The server behind uvicorn on a free port: a raw HTTP client of it, its runtime, its URL."""
    async with serving(settings) as running:
        yield running
