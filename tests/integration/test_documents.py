"""Documents over HTTP against real services: commands in, rows, lists with JSON filters and history out."""

from __future__ import annotations

import json
from typing import Any

import httpx

from blackboard.config import Settings
from tests.integration.harness import command, running

REVIEWS = "/v1/collections/reviews/documents"


async def _ok(client: httpx.AsyncClient, type_: str, stream: str, payload: dict[str, Any], **extra: Any) -> str:
    """Send a command that must be accepted; its position token."""
    answer = await command(client, type_, stream, payload, **extra)
    assert answer.status_code == 200 and answer.json()["outcome"] == "accepted", answer.text
    token: str = answer.json()["position"]
    return token


async def test_a_review_from_creation_to_approval(settings: Settings) -> None:
    async with running(settings) as (client, _):
        token = await _ok(client, "doc.create", "doc:reviews.r-1", {"body": {"reviewer": "carol"},
                                                                   "links": {"task_id": "t-1"}})
        got = await client.get(f"{REVIEWS}/r-1", params={"consistent_with": token})
        assert got.status_code == 200, got.text
        review = got.json()
        assert review["body"] == {"status": "awaiting_review", "reviewer": "carol"}
        assert (review["id"], review["collection"], review["version"]) == ("r-1", "reviews", 1)
        assert review["links"] == {"task_id": "t-1"} and review["created_by"] == review["updated_by"] == "anonymous"

        token = await _ok(client, "doc.patch", "doc:reviews.r-1", {"patch": {"status": "approved", "notes": "good"}},
                          expected_version=1)
        stale = await command(client, "doc.patch", "doc:reviews.r-1", {"patch": {"notes": "late"}},
                              expected_version=1)
        assert stale.status_code == 409 and stale.json()["code"] == "version_conflict"
        back = await command(client, "doc.patch", "doc:reviews.r-1", {"patch": {"status": "awaiting_review"}})
        assert back.status_code == 409 and back.json()["code"] == "illegal_transition"
        assert back.json()["details"]["allowed"] == []
        bad = await command(client, "doc.patch", "doc:reviews.r-1", {"patch": {"status": "maybe"}})
        assert bad.status_code == 409 and bad.json()["code"] == "invalid_document"

        approved = (await client.get(f"{REVIEWS}/r-1", params={"consistent_with": token})).json()
        assert approved["body"] == {"status": "approved", "reviewer": "carol", "notes": "good"}
        assert approved["version"] == 2

        history = await client.get("/v1/streams/doc:reviews.r-1/history", params={"consistent_with": token})
        assert history.status_code == 200, history.text
        assert [(e["type"], e["version"]) for e in history.json()["items"]] == [("doc.created", 1), ("doc.patched", 2)]


async def test_lists_filter_by_body_and_links_and_page_by_cursor(settings: Settings) -> None:
    async with running(settings) as (client, _):
        for i in range(5):
            token = await _ok(client, "doc.create", f"doc:reviews.q-{i}",
                              {"body": {"reviewer": "carol" if i % 2 else "dan"}, "links": {"task_id": f"t-{i % 2}"}})
        token = await _ok(client, "doc.patch", "doc:reviews.q-0", {"patch": {"status": "rejected"}})
        waiting = json.dumps({"status": "awaiting_review"})
        seen: list[str] = []
        cursor = None
        while True:
            params = {"where": waiting, "limit": "2", "consistent_with": token}
            params |= {"cursor": cursor} if cursor else {}
            page = await client.get(REVIEWS, params=params)
            assert page.status_code == 200, page.text
            seen += [d["id"] for d in page.json()["items"]]
            cursor = page.json().get("next_cursor")
            if cursor is None:
                break
        assert seen == ["q-1", "q-2", "q-3", "q-4"]

        linked = await client.get(REVIEWS, params={"link.task_id": "t-1", "sort": "-created_at",
                                                   "fields": "id,body.reviewer"})
        assert linked.json()["items"] == [{"id": "q-3", "body": {"reviewer": "carol"}},
                                          {"id": "q-1", "body": {"reviewer": "carol"}}]
        both = await client.get(REVIEWS, params={"where": '{"reviewer": "dan", "status": "rejected"}'})
        assert [d["id"] for d in both.json()["items"]] == ["q-0"]

        for where in ("{not json", "[1]", '{"a": NaN}'):
            refused = await client.get(REVIEWS, params={"where": where})
            assert refused.status_code == 422 and refused.json()["code"] == "invalid_filter", refused.text
        wrong_sort = await client.get(REVIEWS, params={"sort": "body"})
        assert wrong_sort.status_code == 422 and wrong_sort.json()["code"] == "invalid_sort"


async def test_a_free_form_collection_and_deletion(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await _ok(client, "doc.create", "doc:notes.n-1", {"body": {"anything": [1, {"goes": True}]}})
        again = await command(client, "doc.create", "doc:notes.n-1", {"body": {"other": 1}})
        assert again.status_code == 409 and again.json()["code"] == "already_exists"
        bad = await command(client, "doc.create", "doc:Bad.n-1", {"body": {}})
        assert bad.status_code == 409 and bad.json()["code"] == "invalid_collection"
        missing_rule = await command(client, "doc.create", "doc:corrections.c-1", {"body": {"task_id": "t-1"}})
        assert missing_rule.status_code == 409 and missing_rule.json()["code"] == "invalid_document"

        token = await _ok(client, "doc.delete", "doc:notes.n-1", {"reason": "duplicate"})
        gone = await client.get("/v1/collections/notes/documents/n-1", params={"consistent_with": token})
        assert gone.status_code == 404 and gone.json()["code"] == "document_not_found"
        kept = await client.get("/v1/collections/notes/documents/n-1", params={"include_deleted": "true"})
        assert kept.status_code == 200 and kept.json()["deleted"] is True
        assert kept.json()["body"] == {"anything": [1, {"goes": True}]}
        assert (await client.get("/v1/collections/notes/documents")).json()["items"] == []
        patched = await command(client, "doc.patch", "doc:notes.n-1", {"patch": {"a": 1}})
        assert patched.status_code == 409 and patched.json()["code"] == "document_deleted"
