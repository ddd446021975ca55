"""The secure default: with no credential configured the server listens on loopback only, unless started with
--insecure (said loudly); /metrics and /schema can be put behind a credential."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import IO

import httpx
import pytest
from pydantic import SecretStr

from benchmarks.server import free_port
from blackboard.auth import InsecureBind, check_bind, is_loopback
from blackboard.config import Settings
from tests.integration.harness import running, settings_for


def _up(pg_url: str, topic_prefix: str, port: int, log: IO[bytes], *flags: str) -> subprocess.Popen[bytes]:
    """``blackboard up`` listening on every interface, without any credential; its output goes to ``log``."""
    env = {**os.environ, "BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix,
           "BLACKBOARD_PARTITIONS": "2"}
    env.pop("BLACKBOARD_API_KEYS", None)
    args = [sys.executable, "-m", "blackboard.cli", "up", "--host", "0.0.0.0", "--port", str(port), *flags]
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def _said(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()


def test_a_bind_beyond_loopback_needs_credentials_or_insecure() -> None:
    assert all(map(is_loopback, ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "10.0.0.5", "blackboard.example")))
    with pytest.raises(InsecureBind, match="--insecure"):
        check_bind(Settings(host="0.0.0.0"), insecure=False)
    assert check_bind(Settings(host="0.0.0.0"), insecure=True) is True
    assert check_bind(Settings(host="0.0.0.0", api_keys=SecretStr("k=a:ro")), insecure=False) is False
    assert check_bind(Settings(host="127.0.0.1"), insecure=False) is False
    with pytest.raises(InsecureBind):  # a key list of nothing but separators configures no key
        check_bind(Settings(host="0.0.0.0", api_keys=SecretStr(" , ")), insecure=False)


async def test_the_server_refuses_a_wide_bind_and_starts_with_insecure(pg_url: str, topic_prefix: str) -> None:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        assert _up(pg_url, topic_prefix, port, log).wait(30) == 2
        assert b"refusing to listen on 0.0.0.0" in _said(log)
    with tempfile.TemporaryFile() as log:
        await _serves_insecurely(_up(pg_url, topic_prefix, port, log, "--insecure"), port)
        said = _said(log)
    assert b"auth.insecure" in said and b"--insecure" in said


async def _serves_insecurely(started: subprocess.Popen[bytes], port: int) -> None:
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                assert started.poll() is None and time.monotonic() < deadline, "the server did not start"
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/health/live")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
    finally:
        started.terminate()
        started.wait(20)


async def test_metrics_and_schema_can_need_a_credential(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, protect_metrics_and_schema=True,
                            api_keys=SecretStr("k-r=reader:ro,k-ops=ops:sys"))
    async with running(settings) as (client, _):
        for path in ("/metrics", "/schema/openapi.json"):
            refused = await client.get(path)
            assert (refused.status_code, refused.json()["code"]) == (401, "missing_credentials"), path
            assert (await client.get(path, headers={"X-API-Key": "k-ops"})).status_code == 200, path
        assert (await client.get("/schema/openapi.json", headers={"X-API-Key": "k-r"})).status_code == 200
        # The metrics name every tenant and how busy it is: an operator's, not a reader's.
        reader = await client.get("/metrics", headers={"X-API-Key": "k-r"})
        assert (reader.status_code, reader.json()["code"]) == (403, "insufficient_scope")
        assert "blackboard:admin" in reader.json()["message"]
        assert (await client.get("/health/live")).status_code == 200
