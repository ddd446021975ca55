"""Bad input on the read routes gets a precise 4xx with a machine-readable code, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from blackboard.config import Settings
from tests.integration.harness import running, settings_for

CREATE = {"type": "project.create", "stream": "project:p-1",
          "payload": {"title": "t", "currency": "EUR", "budget_total": "10.00"}}
DEEP = 100_000


@pytest.fixture
async def client(pg_url: str, topic_prefix: str) -> AsyncIterator[Any]:
    settings: Settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)
    async with running(settings) as (c, _):
        assert (await c.post("/v1/commands", json=CREATE)).status_code == 200
        yield c


@pytest.mark.parametrize("body", [
    b'{"ids": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    b'{"ids": ["s-1"], "fields": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    b'{"other": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
    b"[" * DEEP + b"]" * DEEP,
], ids=["deep ids", "deep fields", "deep unknown field", "deep array"])
async def test_a_deep_body_is_refused(client: Any, body: bytes) -> None:
    r = await client.post("/v1/projects/p-1/shots/batch-get", content=body,
                          headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500 and r.json()["code"], r.text[:300]


@pytest.mark.parametrize("path", ["/v1/streams/project:a%00b/history", "/v1/streams/project:a%00b/state"])
async def test_text_postgresql_cannot_hold_in_a_path_is_refused(client: Any, path: str) -> None:
    r = await client.get(path)
    assert (r.status_code, r.json()["code"]) == (422, "invalid_stream"), r.text


async def test_bytes_that_are_not_utf8_in_a_path_name_no_stream(client: Any) -> None:
    # The UTF-8 of a lone surrogate is not UTF-8: it is read as U+FFFD, and no stream has that name.
    odd = await client.get("/v1/streams/project:a%ED%A0%80b/history")
    none = await client.get("/v1/streams/project:nothing-here/history")
    assert (odd.status_code, odd.json()) == (none.status_code, none.json())


@pytest.mark.parametrize("at", ["9999-12-31T23:59:59.999999-14:00", "0001-01-01T00:00:00+14:00"])
async def test_a_time_past_what_can_be_represented_is_refused(client: Any, at: str) -> None:
    for path in ("/v1/streams/project:p-1/state", "/v1/projects/p-1/shots/s-1/state"):
        r = await client.get(path, params={"at": at})
        assert (r.status_code, r.json()["code"]) == (422, "invalid_time"), (path, r.text)


@pytest.mark.parametrize("skill", ["a%00b", "%ED%A0%80", "two%20words", ""])
async def test_a_skill_that_is_not_an_identifier_is_refused(client: Any, skill: str) -> None:
    r = await client.get(f"/v1/nodes?skill={skill}")
    assert 400 <= r.status_code < 500 and r.json()["code"], r.text


@pytest.mark.parametrize("path", ["/v1/commands", "/v1/projects/p-1/shots/batch-get"])
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin-1"])
async def test_a_body_that_is_not_utf8_json_is_refused_alike_on_every_route(
    client: Any, path: str, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = await client.post(path, content=b'{"ids": ["s-1"]}', headers=headers)
    assert (r.status_code, r.json()["code"]) == (415, "unsupported_media_type"), r.text
