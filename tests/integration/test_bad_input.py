"""Bad input gets a precise 4xx with a machine-readable code, and nothing reaches the log."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from blackboard.config import Settings
from tests.integration.harness import command, read_events, running, settings_for

CREATE = {"type": "project.create", "stream": "project:p-1",
          "payload": {"title": "t", "currency": "EUR", "budget_total": "10.00"}}


def cost(amount: Any) -> bytes:
    import json

    return json.dumps({"type": "project.add_cost", "stream": "project:p-1",
                       "payload": {"amount": amount, "reason": "r"}}).encode()


CASES: list[tuple[str, bytes, int, str]] = [
    ("not json", b"{not json", 400, "malformed_json"),
    ("truncated", b'{"type": "project.add_cost"', 400, "malformed_json"),
    ("empty body", b"", 400, "malformed_json"),
    ("NaN", b'{"type": "project.add_cost", "stream": "project:p-1", "payload": {"amount": NaN}}', 400,
     "malformed_json"),
    ("duplicate keys", b'{"type": "task.create", "type": "project.create", "stream": "project:p-1", '
     b'"payload": {}}', 400, "malformed_json"),
    ("lone surrogate", b'{"type": "project.add_cost", "stream": "project:p-1", '
     b'"payload": {"amount": "1.00", "reason": "\\ud800"}}', 422, "invalid_command"),
    ("array body", b"[1, 2]", 422, "invalid_command"),
    ("unknown type", b'{"type": "project.delete", "stream": "project:p-1", "payload": {}}', 422,
     "invalid_command"),
    ("wrong stream category", b'{"type": "project.add_cost", "stream": "task:p-1", '
     b'"payload": {"amount": "1.00", "reason": "r"}}', 422, "invalid_command"),
    ("float money", cost(12.5), 422, "invalid_command"),
    ("negative money", cost("-1.00"), 422, "invalid_command"),
    ("zero money", cost("0"), 422, "invalid_command"),
    ("too many decimals", cost("1.00001"), 422, "invalid_command"),
    ("NUL in a string", b'{"type": "project.add_cost", "stream": "project:p-1", '
     b'"payload": {"amount": "1.00", "reason": "a\\u0000b"}}', 422, "invalid_command"),
    ("deep nesting", b'{"type": "project.create", "stream": "project:p-2", "payload": {"title": "t", '
     b'"currency": "EUR", "budget_total": "1", "global_spec": ' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}}",
     422, "invalid_command"),
    ("unknown field", b'{"type": "project.add_cost", "stream": "project:p-1", '
     b'"payload": {"amount": "1.00", "reason": "r", "actor": "mallory"}}', 422, "invalid_command"),
    ("negative expected_version", b'{"type": "project.add_cost", "stream": "project:p-1", '
     b'"expected_version": -1, "payload": {"amount": "1.00", "reason": "r"}}', 422, "invalid_command"),
    ("huge expected_version", b'{"type": "project.add_cost", "stream": "project:p-1", '
     b'"expected_version": 99999999999999999999999, "payload": {"amount": "1.00", "reason": "r"}}', 422,
     "invalid_command"),
]


@pytest.fixture
async def client(pg_url: str, topic_prefix: str) -> AsyncIterator[tuple[Any, Any, Settings]]:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, max_body_bytes=65536,
                            consistency_timeout_seconds=1.0)
    async with running(settings) as (c, runtime):
        assert (await c.post("/v1/commands", json=CREATE)).status_code == 200
        yield c, runtime, settings


@pytest.mark.parametrize(("name", "body", "status", "code"), CASES, ids=[c[0] for c in CASES])
async def test_bad_body_is_refused_and_appends_nothing(
    client: tuple[Any, Any, Settings], name: str, body: bytes, status: int, code: str
) -> None:
    c, runtime, settings = client
    r = await c.post("/v1/commands", content=body, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    if status == 422:
        assert r.json()["errors"] and all(e["path"].startswith("$") for e in r.json()["errors"])
    assert len(await read_events(runtime.log, settings.events_topic)) == 1
    assert (await command(c, "project.add_cost", "project:p-1", {"amount": "1.00", "reason": "ok"})).status_code == 200


async def test_transport_level_refusals(client: tuple[Any, Any, Settings]) -> None:
    c, runtime, settings = client
    wrong_type = await c.post("/v1/commands", content=cost("1.00"), headers={"content-type": "text/plain"})
    assert (wrong_type.status_code, wrong_type.json()["code"]) == (415, "unsupported_media_type")
    big = b'{"type": "project.add_cost", "stream": "project:p-1", "payload": {"amount": "1.00", "reason": "' + (
        b"x" * 70000) + b'"}}'
    too_big = await c.post("/v1/commands", content=big, headers={"content-type": "application/json"})
    assert (too_big.status_code, too_big.json()["code"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    chunked = await c.post("/v1/commands", content=chunks(), headers={"content-type": "application/json"})
    assert (chunked.status_code, chunked.json()["code"]) == (413, "payload_too_large")
    assert len(await read_events(runtime.log, settings.events_topic)) == 1


async def test_strange_but_valid_text_is_stored_verbatim(client: tuple[Any, Any, Settings]) -> None:
    c, _, _ = client
    reason = "'; DROP TABLE projects; -- %_ \u200b\u202e مرحبا"
    ok = await command(c, "project.add_cost", "project:p-1", {"amount": "1.00", "reason": reason})
    assert ok.status_code == 200
    history = await c.get("/v1/streams/project:p-1/history", params={"consistent_with": ok.json()["position"]})
    assert history.json()["items"][-1]["payload"]["reason"] == reason


async def test_bad_reads(client: tuple[Any, Any, Settings]) -> None:
    c, _, _ = client
    assert (await c.get("/v1/projects/nope")).json()["code"] == "project_not_found"
    assert (await c.get("/v1/projects/nope")).status_code == 404
    bad_token = await c.get("/v1/projects/p-1", params={"consistent_with": "x:y"})
    assert (bad_token.status_code, bad_token.json()["code"]) == (422, "invalid_consistency_token")
    bad_status = await c.get("/v1/tasks", params={"status": "exploded"})
    assert (bad_status.status_code, bad_status.json()["code"]) == (422, "invalid_filter")
    far = await c.get("/v1/projects/p-1", params={"consistent_with": "0:999999"})
    assert (far.status_code, far.json()["code"]) == (503, "consistency_timeout")
    assert far.headers["content-type"] == "application/problem+json" and far.headers["retry-after"] == "1"
    # A partition the topic does not have is never reached: refused at once, not waited for (the bound is 1 s).
    started = time.perf_counter()
    nowhere = await c.get("/v1/projects/p-1", params={"consistent_with": "0:0,9:0"})
    assert (nowhere.status_code, nowhere.json()["code"]) == (422, "unknown_partition"), nowhere.text
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("raw", ["%ED%A0%80", "a%00b", "%FF"])
async def test_text_a_list_cannot_hold_never_reaches_a_query_or_a_cursor(
    client: tuple[Any, Any, Settings], raw: str
) -> None:
    # The UTF-8 of a lone surrogate (U+D800), a NUL, bytes that are not UTF-8: as a filter and as a cursor.
    c, _, _ = client
    cursor = await c.get(f"/v1/tasks?cursor={raw}")
    assert (cursor.status_code, cursor.json()["code"]) == (422, "invalid_cursor"), cursor.text
    name = await c.get(f"/v1/tasks?name={raw}")
    if "%00" in raw:
        assert (name.status_code, name.json()["code"]) == (422, "invalid_filter"), name.text
    else:
        # Bytes that are not UTF-8 are read as U+FFFD, a character like any other: a task name holds none here.
        assert (name.status_code, name.json()["items"]) == (200, []), name.text
