"""Fixtures of the MCP tools' tests: one real server (PostgreSQL log and read models, Redis) for the module."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pydantic import SecretStr

from tests.conftest import _with_database
from tests.integration.harness import serving, settings_for

#: The server's API keys: the one the MCP servers under test hold, and one an MCP client presents itself.
KEY, CLIENT_KEY = "k-mcp", "k-agent"


@pytest.fixture(scope="module")
async def blackboard_url(postgres_server_url: str, redis_server: str) -> AsyncIterator[str]:
    """A Blackboard behind uvicorn on loopback, with API keys, shared by the module's tests (each uses streams of
    its own)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    settings = settings_for("postgres", pg_url=_with_database(postgres_server_url, name),
                            topic_prefix=f"t{uuid.uuid4().hex[:8]}.", redis_url=redis_server,
                            redis_prefix=f"t{uuid.uuid4().hex[:8]}:",
                            api_keys=SecretStr(f"{KEY}=mcp:rw,{CLIENT_KEY}=agent-7:rw"))
    async with serving(settings) as (_, _, url):
        yield url
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
