"""The CLI when a service is not there: one line naming it, what was tried and the setting, exit 1, no traceback;
the client commands find the server by BLACKBOARD_HOST and BLACKBOARD_PORT; nothing is created unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis
from pydantic import SecretStr

from blackboard.cli import run
from blackboard.cli.failures import unreachable
from blackboard.config import Settings
from tests.services import free_port


def _cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """``blackboard ARGS`` in a subprocess, configured by ``env`` only (no BLACKBOARD_ setting of this process)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOARD_")}
    return subprocess.run([sys.executable, "-m", "blackboard.cli", *args], env={**clean, **env, "COLUMNS": "400"},
                          cwd=cwd, capture_output=True, text=True, timeout=60)


def _in_process(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
                **env: str) -> subprocess.CompletedProcess[str]:
    """``blackboard ARGS`` run in this process (as ``main`` runs it, without its logging), configured by ``env``."""
    for name in [k for k in os.environ if k.startswith("BLACKBOARD_")]:
        monkeypatch.delenv(name)
    for name, value in {**env, "COLUMNS": "400"}.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return subprocess.CompletedProcess(args, code if isinstance(code, int) else 1, out, err)


def _one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The one line the CLI ended with, once it is checked to be a failure without a traceback."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    for text in expected:
        assert text in line, line
    return line


def test_a_broker_not_there_is_the_one_line_the_command_prints() -> None:
    """The whole command as installed (its logging too): the broker client's own lines are not repeated."""
    broker, postgres = free_port(), free_port()
    topics = _cli("topics", BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{broker}",
                  BLACKBOARD_POSTGRES_URL=f"postgresql://bb:bb@127.0.0.1:{postgres}/bb")
    _one_line_failure(topics, "broker", f"127.0.0.1:{broker}", "BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS")


def test_client_commands_find_the_server_by_host_and_port(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    partitions = _in_process(capsys, monkeypatch, "partitions", BLACKBOARD_HOST="127.0.0.1", BLACKBOARD_PORT=str(port))
    _one_line_failure(partitions, f"http://127.0.0.1:{port}/v1/partitions", "BLACKBOARD_PORT")
    runs = _in_process(capsys, monkeypatch, "runs", "list", BLACKBOARD_HOST="localhost", BLACKBOARD_PORT=str(port))
    _one_line_failure(runs, f"http://localhost:{port}/v1/runs", "BLACKBOARD_URL")
    given = _in_process(capsys, monkeypatch, "partitions", f"http://127.0.0.1:{port}", BLACKBOARD_PORT="1")
    _one_line_failure(given, f"http://127.0.0.1:{port}/v1/partitions")


def test_postgresql_not_there_is_one_line_without_its_password(capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    postgres = free_port()
    dead_pg = f"postgresql://bb:hunter2@127.0.0.1:{postgres}/bb"
    lag = _in_process(capsys, monkeypatch, "lag", BLACKBOARD_POSTGRES_URL=dead_pg)
    line = _one_line_failure(lag, "PostgreSQL", f"postgresql://bb:***@127.0.0.1:{postgres}/bb",
                             "BLACKBOARD_POSTGRES_URL")
    assert "hunter2" not in lag.stderr and "hunter2" not in line


def test_doctor_creates_no_postgresql_where_there_is_none(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    result = _in_process(capsys, monkeypatch, "doctor")
    _one_line_failure(result, "no PostgreSQL", str(tmp_path / ".blackboard"), "BLACKBOARD_DATA_DIR")
    assert list(tmp_path.iterdir()) == []


async def test_redis_and_the_server_refusing_are_named_by_what_was_tried() -> None:
    port = free_port()
    settings = Settings(redis_url=SecretStr(f"redis://:s3cret@127.0.0.1:{port}/0"))
    client = redis.Redis.from_url(settings.redis_url.get_secret_value() if settings.redis_url else "")
    with pytest.raises(Exception) as refused:
        await client.ping()
    await client.aclose()
    line = unreachable(refused.value, settings)
    assert line is not None and f"redis://:***@127.0.0.1:{port}/0" in line and "BLACKBOARD_REDIS_URL" in line
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError) as no_server:
            await http.get(f"http://127.0.0.1:{port}/v1/partitions")
    assert f"127.0.0.1:{port}/v1/partitions" in (unreachable(no_server.value, settings) or "")
    assert unreachable(ValueError("not a service"), settings) is None
