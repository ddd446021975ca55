"""``blackboard up``'s stderr is JSON lines, the libraries' too; a 500 says what was asked, with the request's
id and trace id, and its traceback as a field; the access log is switched on by a setting."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx
import pytest

from tests.integration.harness import Process
from tests.services import free_port

pytestmark = pytest.mark.slow

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line after the start-up banner, each of which must be a JSON object."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("{"))  # the banner is for people
    parsed = []
    for line in lines[first:]:
        if not line.startswith("{"):  # a traceback's lines, a library's text
            pytest.fail(f"not a JSON line: {line}")
        value = json.loads(line)
        assert isinstance(value, dict), line
        parsed.append(value)
    return parsed


async def test_every_line_is_json_and_a_500_says_what_was_asked(pg_url: str, topic_prefix: str) -> None:
    env = {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix,
           "BLACKBOARD_PARTITIONS": "2", "BLACKBOARD_ACCESS_LOG": "true", "BLACKBOARD_LOG_LEVEL": "info"}
    server = Process(env, free_port())
    try:
        await server.ready()
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            body = {"type": "project.create", "stream": "project:p-1",
                    "payload": {"title": "t", "currency": "EUR", "budget_total": "1.00"}}
            assert (await client.post("/v1/commands", json=body)).status_code == 200
            conn = await asyncpg.connect(pg_url)
            try:  # a read model gone from under the server: the read fails unexpectedly
                for row in await conn.fetch("SELECT table_schema FROM information_schema.tables "
                                            "WHERE table_name = 'projects'"):
                    await conn.execute(f'DROP TABLE "{row["table_schema"]}".projects CASCADE')
            finally:
                await conn.close()
            failed = await client.get("/v1/projects/p-1", headers={
                "X-Request-ID": "req-500", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
        assert failed.status_code == 500 and failed.headers["x-request-id"] == "req-500"
    finally:
        server.terminate()
        server.proc.wait(30)
        server.log.seek(0)
        text = server.log.read().decode(errors="replace")
        server.log.close()
    lines = json_lines(text)
    unexpected = [line for line in lines if line.get("event") == "http.unexpected"]
    assert len(unexpected) == 1, text[-3000:]
    line = unexpected[0]
    assert (line["level"], line["method"], line["path"]) == ("error", "GET", "/v1/projects/p-1")
    assert (line["request_id"], line["trace_id"]) == ("req-500", TRACE_ID)
    assert isinstance(line["exception"], list) and line["exception"][0]["exc_type"] == "UndefinedTableError"
    access = [a for a in lines if a.get("event") == "http.access" and a.get("request_id") == "req-500"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [("GET", "/v1/projects/p-1", 500)]
    assert any(a.get("logger", "").startswith("uvicorn") for a in lines), "the libraries' lines are JSON too"
