"""Schemathesis against our own OpenAPI: whatever it sends, the service never answers 5xx."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err, Ok
from schemathesis.errors import InvalidSchema

from blackboard.schemas.registry import COMMAND_TYPES
from tests.services import free_port

#: Generated commands: enough for most command types to come up, with invalid bodies besides.
COMMAND_EXAMPLES = 150


@pytest.fixture(scope="module")
def server_url(postgres_server_url: str) -> Iterator[str]:
    """A ``blackboard up`` process with schemas and topics of its own on the shared PostgreSQL."""
    tag = uuid.uuid4().hex[:8]
    port = free_port()
    env = {**os.environ, "BLACKBOARD_POSTGRES_URL": postgres_server_url, "BLACKBOARD_TOPIC_PREFIX": f"f{tag}.",
           "BLACKBOARD_READ_SCHEMA": f"fuzz_{tag}", "BLACKBOARD_LOG_SCHEMA": f"fuzzlog_{tag}"}
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "blackboard.cli", "up", "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc)
            httpx.post(f"{url}/v1/commands", json={
                "type": "project.create", "stream": "project:p-1",
                "payload": {"title": "t", "currency": "EUR", "budget_total": "10"}}).raise_for_status()
            yield url
        finally:
            proc.terminate()
            proc.wait(20)
            log.seek(0)
            assert b"Traceback" not in log.read(), "the server logged an unexpected error"


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "blackboard up exited"
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("blackboard up did not become ready")


def test_no_input_makes_the_service_fail(server_url: str) -> None:
    """Every operation, with generated valid parameters and bodies (and invalid bodies for the writes): no
    answer is a 5xx. The command body is generated from the contract's union of every command type, so most
    types are sent, and some pass validation to be decided (accepted, or rejected by a rule)."""
    api = schemathesis.openapi.from_url(f"{server_url}/schema/openapi.json")
    operations = [_operation(result) for result in api.get_all_operations()]
    assert len(operations) >= 5
    calls: list[int] = []
    commands: list[tuple[str, int]] = []

    for operation in operations:
        _exercise(operation, calls, commands)
    assert len(calls) > 5 * len(operations), "the generator must have exercised every operation"
    sent = {kind for kind, _ in commands}
    assert len(sent & set(COMMAND_TYPES)) >= len(COMMAND_TYPES) // 2, f"few command types generated: {sent}"
    assert {status for _, status in commands} & {200, 409}, "no generated command was decided"


# schemathesis leaves its operations unparameterised: Any is what it gives.
Operation = APIOperation[Any, Any, Any, Any]


def _operation(result: Ok[Operation] | Err[InvalidSchema]) -> Operation:
    """The operation schemathesis built from our schema, or the schema error that kept it from building one."""
    if isinstance(result, Err):
        raise result.err()
    return result.ok()


def _exercise(operation: Operation, calls: list[int], commands: list[tuple[str, int]]) -> None:
    """Generated requests for one operation; every status code goes to ``calls``, and each command's type
    with its status to ``commands``.

    Note: an event stream that was accepted never ends: its answer is read for half a second, and a
    read that times out (the 200 headers came, the events go on) counts as an accepted subscription.
    """
    push = "push" in (operation.tags or [])
    command = operation.method.upper() == "POST" and operation.path == "/v1/commands"
    modes = [GenerationMode.POSITIVE]
    if operation.body:
        modes.append(GenerationMode.NEGATIVE)
    for mode in modes:
        examples = 10 if push else COMMAND_EXAMPLES if command and mode is GenerationMode.POSITIVE else 40

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: Any) -> None:
            try:
                status = case.call_and_validate(checks=[not_a_server_error],
                                                **({"timeout": 0.5} if push else {})).status_code
            except requests.exceptions.ReadTimeout:
                assert push, "only an event stream may keep its answer open"
                status = 200
            calls.append(status)
            if command and isinstance(case.body, dict) and isinstance(case.body.get("type"), str):
                commands.append((case.body["type"], status))

        no_server_error()
