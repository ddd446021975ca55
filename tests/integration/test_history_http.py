"""History with changes, shot and artifact history, and time travel, over HTTP against real services."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from blackboard.config import Settings
from blackboard.schemas.changes import apply_changes, same
from blackboard.schemas.views import FieldChange
from tests.integration.harness import command, running, settings_for

BASE = "/v1/streams/project:p-1"


@pytest.fixture
def settings(pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> Settings:
    """The PostgreSQL log: history and time travel read only the read models, whatever the engine."""
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                        redis_prefix=redis_prefix)


async def _ok(client: httpx.AsyncClient, type_: str, payload: dict[str, Any]) -> str:
    answer = await command(client, type_, "project:p-1", payload)
    assert answer.status_code == 200, answer.text
    position: str = answer.json()["position"]
    return position


async def _project(client: httpx.AsyncClient) -> str:
    """A project whose shot ``s-1`` goes draft → review, with costs and an artifact between; the last token."""
    await _ok(client, "project.create", {"title": "Trailer", "currency": "EUR", "budget_total": "100.00"})
    await _ok(client, "project.create_shot", {"shot_id": "s-1", "fields": {"status": "draft"}})
    await _ok(client, "project.add_cost", {"amount": "10.00", "reason": "render"})
    await _ok(client, "project.create_shot", {"shot_id": "s-2", "fields": {"status": "draft"}})
    await _ok(client, "project.update_shot", {"shot_id": "s-1", "patch": {"status": "review"}, "expected_version": 1})
    return await _ok(client, "project.register_artifact",
                     {"artifact_id": "a-1", "kind": "image", "uri": "s3://bucket/a-1.png", "shot_id": "s-1"})


def _changes(entry: dict[str, Any]) -> list[FieldChange]:
    return [FieldChange(c["path"], c["op"], c["from"], c["to"]) for c in entry["changes"]]


async def test_history_entries_carry_what_each_event_changed(settings: Settings) -> None:
    async with running(settings) as (client, _):
        token = await _project(client)
        full = (await client.get(f"{BASE}/history", params={"consistent_with": token})).json()
        entries = full["items"]
        assert [e["version"] for e in entries] == list(range(1, len(entries) + 1))

        review = next(e for e in entries if e["type"] == "project.shot_updated")
        assert {"path": "/shots/s-1/fields/status", "op": "replace", "from": "draft", "to": "review"} in review[
            "changes"]
        state: Any = {}
        for entry in entries:
            state = apply_changes(state, _changes(entry))
        latest = (await client.get(f"{BASE}/state")).json()
        assert latest["version"] == len(entries) and same(state, latest["state"])

        paged, cursor = [], None
        while True:
            page = (await client.get(f"{BASE}/history", params={"page_size": 2, **({"cursor": cursor} if cursor
                                                                                  else {})})).json()
            paged += page["items"]
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        assert paged == entries


async def test_state_by_version_and_by_time(settings: Settings) -> None:
    async with running(settings) as (client, _):
        token = await _project(client)
        entries = (await client.get(f"{BASE}/history", params={"consistent_with": token})).json()["items"]

        second = (await client.get(f"{BASE}/state", params={"version": 2})).json()
        assert second["version"] == 2 and second["occurred_at"] == entries[1]["occurred_at"]
        assert same(second["state"], apply_changes(apply_changes({}, _changes(entries[0])), _changes(entries[1])))
        assert second["state"]["shots"]["s-1"]["fields"] == {"status": "draft"}

        at = entries[2]["occurred_at"]
        then = (await client.get(f"{BASE}/state", params={"at": at})).json()
        expected = max(e["version"] for e in entries if e["occurred_at"] <= at)
        assert then["version"] == expected >= 3

        before = (datetime.fromisoformat(entries[0]["occurred_at"]) - timedelta(seconds=1)).isoformat()
        await _error(client, f"{BASE}/state", {"at": before}, 404, "version_not_found")
        await _error(client, f"{BASE}/state", {"version": 99}, 404, "version_not_found")
        await _error(client, "/v1/streams/project:nope/state", {}, 404, "stream_not_found")
        await _error(client, f"{BASE}/state", {"version": 1, "at": at}, 422, "invalid_request")
        await _error(client, f"{BASE}/state", {"at": "2025-01-01T00:00:00"}, 422, "invalid_time")
        await _error(client, f"{BASE}/state", {"at": "yesterday"}, 422, "invalid_request")
        await _error(client, f"{BASE}/state", {"version": 0}, 422, "invalid_request")
        await _error(client, "/v1/streams/nocolon/state", {}, 422, "invalid_stream")
        await _error(client, "/v1/streams/widget:w-1/state", {}, 422, "unknown_category")


async def test_a_shot_has_its_own_history_and_states(settings: Settings) -> None:
    async with running(settings) as (client, _):
        token = await _project(client)
        shot = await client.get("/v1/projects/p-1/shots/s-1/history", params={"consistent_with": token})
        assert shot.status_code == 200, shot.text
        entries = shot.json()["items"]

        assert [e["type"] for e in entries] == ["project.shot_created", "project.shot_updated"]
        assert all(c["path"].startswith("/shots/s-1/") for e in entries for c in e["changes"])
        paged = (await client.get("/v1/projects/p-1/shots/s-1/history", params={"page_size": 1})).json()
        assert paged["items"] == entries[:1] and paged["next_cursor"] == str(entries[0]["version"])

        first = (await client.get("/v1/projects/p-1/shots/s-1/state", params={"version": 1})).json()
        assert first["version"] == 1 and first["state"]["fields"] == {"status": "draft"}
        assert first["project_version"] == entries[0]["version"]
        now = (await client.get("/v1/projects/p-1/shots/s-1/state")).json()
        assert now["version"] == 2 and now["state"]["fields"] == {"status": "review"}
        then = (await client.get("/v1/projects/p-1/shots/s-1/state", params={"at": entries[0]["occurred_at"]})).json()
        assert then["version"] == 1

        await _error(client, "/v1/projects/p-1/shots/s-1/state", {"version": 3}, 404, "version_not_found")
        await _error(client, "/v1/projects/p-1/shots/s-9/state", {}, 404, "shot_not_found")
        await _error(client, "/v1/projects/p-1/shots/s-9/history", {}, 404, "shot_not_found")
        await _error(client, "/v1/projects/p-9/shots/s-1/state", {}, 404, "stream_not_found")
        await _error(client, "/v1/projects/p-9/shots/s-1/history", {}, 404, "stream_not_found")


async def test_an_artifact_has_its_own_history(settings: Settings) -> None:
    async with running(settings) as (client, _):
        token = await _project(client)
        answer = await client.get("/v1/projects/p-1/artifacts/a-1/history", params={"consistent_with": token})
        assert answer.status_code == 200, answer.text
        entries = answer.json()["items"]

        assert [e["type"] for e in entries] == ["project.artifact_registered"]
        assert entries[0]["changes"] and all(c["path"].startswith("/artifacts/a-1/") for c in entries[0]["changes"])
        await _error(client, "/v1/projects/p-1/artifacts/a-9/history", {}, 404, "artifact_not_found")


async def _error(client: httpx.AsyncClient, path: str, params: dict[str, Any], status: int, code: str) -> None:
    answer = await client.get(path, params=params)
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code, answer.text
