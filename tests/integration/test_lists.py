"""Lists against PostgreSQL: keyset paging visits every row once under any sort; the HTTP lists of tasks and shots."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from blackboard.config import Settings
from blackboard.projector.migrate import create_pool, migrate
from blackboard.query_api import lists
from tests.integration.harness import command, running, settings_for


@pytest.fixture
def settings(pg_url: str, topic_prefix: str) -> Settings:
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)


@pytest.fixture
async def pool(pg_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(pg_url, "lists")
    await migrate(pool, "lists")
    yield pool
    await pool.close()


# ── keyset paging straight on the read models ───────────────────────────────────────────

T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def _seed(pool: asyncpg.Pool) -> None:
    """60 tasks and 40 shots whose sort values repeat a lot: only the id tells many rows apart."""
    tasks = [(f"t-{i:03d}", f"name-{i % 4}", i % 3, ["pending", "running"][i % 2], 1 + i % 5,
              T0 + timedelta(seconds=i % 6), T0 + timedelta(seconds=i % 7)) for i in range(60)]
    await pool.executemany(
        """INSERT INTO tasks (id, name, priority, payload, status, version, partition, last_offset, created_at,
                              updated_at) VALUES ($1, $2, $3, '{}', $4, $5, 0, 0, $6, $7)""", tasks)
    await pool.execute("""INSERT INTO projects (id, title, currency, budget_total, version, partition, last_offset,
                                                created_at, updated_at)
                          VALUES ('p-1', 't', 'EUR', 1, 1, 0, 0, $1, $1)""", T0)
    shots = [("p-1", f"s-{i:02d}", {"scene": f"sc-{i % 3}", **({"lens": f"l{i % 2}"} if i % 4 else {})}, 1 + i % 3,
              T0 + timedelta(seconds=i % 5)) for i in range(40)]
    # Newer migrations may add columns such as created_at; the lists read only these five.
    extra = await pool.fetchval("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'lists' "
                                "AND table_name = 'shots' AND column_name = 'created_at'")
    await pool.executemany(f"INSERT INTO shots (project_id, shot_id, fields, version, updated_at"
                           f"{', created_at' if extra else ''}) VALUES ($1, $2, $3, $4, $5{', $5' if extra else ''})",
                           shots)


async def _walk(pool: asyncpg.Pool, spec: lists.ListSpec, sort: str, page_size: int, scope: tuple[Any, ...] = (),
                filters: dict[str, str] | None = None, between_pages: Any = None) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query = lists.parse_list_query(spec, sort=sort, filters=filters, page_size=page_size, cursor=cursor,
                                       scope=scope)
        rows, cursor = await lists.fetch_page(pool, spec, query, scope, tenant="default")
        seen += [r["shot_id" if spec is lists.SHOTS else "id"] for r in rows]
        if cursor is None:
            return seen
        if between_pages is not None:
            await between_pages()


TASK_SORTS = ["created_at", "-created_at", "priority,-updated_at", "-priority,name", "name,-created_at,priority",
              "-updated_at", "status,-priority", "-id"]
SHOT_SORTS = ["id", "-version", "field.scene,-version", "-field.lens", "field.lens,-updated_at", "updated_at,-id"]


async def test_every_sort_pages_through_every_row_once(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    for sort, size in itertools.product(TASK_SORTS, [1, 7, 60]):
        whole = await _walk(pool, lists.TASKS, sort, 500)
        assert len(whole) == 60
        assert await _walk(pool, lists.TASKS, sort, size) == whole, (sort, size)
    for sort, size in itertools.product(SHOT_SORTS, [1, 6, 40]):
        whole = await _walk(pool, lists.SHOTS, sort, 500, ("p-1",))
        assert len(whole) == 40
        assert await _walk(pool, lists.SHOTS, sort, size, ("p-1",)) == whole, (sort, size)
    assert len(await _walk(pool, lists.TASKS, "-priority", 4, filters={"priority_min": "1", "status": "running"})) \
        == sum(1 for i in range(60) if i % 3 >= 1 and i % 2 == 1)


async def test_rows_inserted_while_paging_neither_repeat_nor_hide_others(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    counter = itertools.count()

    async def insert_one() -> None:
        # Sorts first under "created_at": an offset walk would see every later row shift by one.
        i = next(counter)
        await pool.execute("""INSERT INTO tasks (id, name, priority, payload, status, version, partition, last_offset,
                                                 created_at, updated_at)
                              VALUES ($1, 'new', 0, NULL, 'pending', 1, 0, 0, $2, $2)""",
                           f"new-{i:03d}", T0 - timedelta(seconds=1))

    seen = await _walk(pool, lists.TASKS, "created_at", 7, between_pages=insert_one)
    originals = [s for s in seen if s.startswith("t-")]
    assert len(originals) == len(set(originals)) == 60


# ── HTTP ────────────────────────────────────────────────────────────────────────────────


async def _pages(client: httpx.AsyncClient, url: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        r = await client.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json().get("next_cursor")
        if cursor is None:
            return items


async def _refused(client: httpx.AsyncClient, url: str, code: str, param: str, **params: Any) -> None:
    r = await client.get(url, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code and r.json()["errors"][0]["path"] == param, r.text


async def test_task_list_over_http(settings: Settings) -> None:
    async with running(settings) as (client, _):
        for i in range(12):
            r = await command(client, "task.create", f"task:t-{i:02d}", {"name": f"job-{i % 3}", "priority": i % 4})
            assert r.status_code == 200, r.text
        for i in range(0, 12, 3):
            r = await command(client, "task.claim", f"task:t-{i:02d}", {"node": "n-1"})
        token = r.json()["position"]
        ids = [f"t-{i:02d}" for i in range(12)]

        first = await client.get("/v1/tasks", params={"consistent_with": token})
        assert [t["id"] for t in first.json()["items"]] == ids  # today's default: oldest first
        for sort in ("-priority,name", "name", "-updated_at", "priority,-created_at"):
            got = await _pages(client, "/v1/tasks", sort=sort, page_size=5)
            assert sorted(t["id"] for t in got) == ids, sort
        by_priority = await _pages(client, "/v1/tasks", sort="-priority", page_size=5)
        assert [t["priority"] for t in by_priority] == sorted((i % 4 for i in range(12)), reverse=True)

        claimed = await _pages(client, "/v1/tasks", status="claimed")
        assert [t["id"] for t in claimed] == ["t-00", "t-03", "t-06", "t-09"]
        middle = await _pages(client, "/v1/tasks", priority_min=1, priority_max=2, name="job-1", page_size=2)
        assert [t["id"] for t in middle] == [f"t-{i:02d}" for i in range(12) if i % 3 == 1 and 1 <= i % 4 <= 2]
        slim = await client.get("/v1/tasks", params={"fields": "id,priority", "page_size": 2})
        assert slim.json()["items"] == [{"id": "t-00", "priority": 0}, {"id": "t-01", "priority": 1}]

        await _refused(client, "/v1/tasks", "invalid_sort", "sort", sort="colour")
        await _refused(client, "/v1/tasks", "invalid_filter", "priority_min", priority_min="high")
        await _refused(client, "/v1/tasks", "invalid_filter", "status", status="asleep")
        await _refused(client, "/v1/tasks", "invalid_cursor", "cursor", cursor="not-a-cursor")
        other = (await client.get("/v1/tasks", params={"sort": "name", "page_size": 2})).json()["next_cursor"]
        await _refused(client, "/v1/tasks", "invalid_cursor", "cursor", sort="-name", cursor=other)
        await _refused(client, "/v1/tasks", "invalid_cursor", "cursor", sort="name", status="claimed", cursor=other)
        await _refused(client, "/v1/tasks", "unknown_field", "fields", fields="id,colour")


async def _shots(client: httpx.AsyncClient) -> str:
    r = await command(client, "project.create", "project:p-1",
                      {"title": "Trailer", "currency": "EUR", "budget_total": "100.00", "global_spec": {}})
    assert r.status_code == 200, r.text
    for i in range(15):
        patch = {"status": ["draft", "review"][i % 2], "scene": f"sc-{i % 3}", **({"lens": f"{i % 2}0mm"} if i % 5
                                                                                  else {})}
        r = await command(client, "project.update_shot", "project:p-1",
                          {"shot_id": f"s-{i:02d}", "patch": patch, "expected_version": 0})
        assert r.status_code == 200, r.text
    for i in range(0, 15, 4):
        r = await command(client, "project.update_shot", "project:p-1",
                          {"shot_id": f"s-{i:02d}", "patch": {"take": 2}, "expected_version": 1})
        assert r.status_code == 200, r.text
    token: str = r.json()["position"]
    return token


async def test_shot_list_and_batch_get_over_http(settings: Settings) -> None:
    url = "/v1/projects/p-1/shots"
    async with running(settings) as (client, _):
        token = await _shots(client)
        ids = [f"s-{i:02d}" for i in range(15)]
        first = await client.get(url, params={"consistent_with": token})
        assert [s["id"] for s in first.json()["items"]] == ids
        assert first.json()["items"][4] == {"status": "draft", "scene": "sc-1", "lens": "00mm", "take": 2,
                                            "id": "s-04", "version": 2}
        for sort in ("-version", "field.scene,-id", "-field.lens", "updated_at", "-id"):
            got = await _pages(client, url, sort=sort, page_size=4)
            assert sorted(s["id"] for s in got) == ids, sort
        assert [s["version"] for s in await _pages(client, url, sort="-version", page_size=3)] == [2] * 4 + [1] * 11

        review = await _pages(client, url, status="review", scene="sc-1", page_size=1)
        assert [s["id"] for s in review] == ["s-01", "s-07", "s-13"]
        lens = await _pages(client, url, **{"field.lens": "10mm", "fields": "id,lens", "page_size": "2"})
        assert lens == [{"id": f"s-{i:02d}", "lens": "10mm"} for i in range(15) if i % 5 and i % 2]

        await _refused(client, url, "invalid_sort", "sort", sort="field.a-b")
        await _refused(client, url, "invalid_filter", "scene", scene="a\x00b")
        await _refused(client, url, "invalid_filter", "field.1x", **{"field.1x": "a"})
        await _refused(client, url, "unknown_field", "fields", fields="id,a b")
        other = (await client.get(url, params={"scene": "sc-0", "page_size": 1})).json()["next_cursor"]
        await _refused(client, url, "invalid_cursor", "cursor", scene="sc-1", cursor=other)
        missing = await client.get("/v1/projects/nope/shots")
        assert missing.status_code == 404 and missing.json()["code"] == "project_not_found"
        await _batch_get(client)


async def _batch_get(client: httpx.AsyncClient) -> None:
    url = "/v1/projects/p-1/shots/batch-get"
    r = await client.post(url, json={"ids": ["s-09", "zz", "s-01", "s-04"], "fields": ["id", "scene"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"items": [{"id": "s-09", "scene": "sc-0"}, {"id": "s-01", "scene": "sc-1"},
                                  {"id": "s-04", "scene": "sc-1"}], "missing": ["zz"]}
    whole = await client.post(url, json={"ids": ["s-00"]})
    assert whole.json()["items"][0]["version"] == 2 and whole.json()["missing"] == []
    none = await client.post(url, json={"ids": ["x", "y"]})
    assert none.json() == {"items": [], "missing": ["x", "y"]}
    for body, code in (({"ids": ["s-01", "s-01"]}, "duplicate_ids"),
                       ({"ids": [f"s-{i}" for i in range(501)]}, "too_many_ids"),
                       ({"ids": ["s-01"], "fields": ["a b"]}, "unknown_field"),
                       ({"ids": "s-01"}, "invalid_request"),
                       ({"ids": ["s\u0000"]}, "invalid_request")):
        refused = await client.post(url, json=body)
        assert refused.status_code == 422 and refused.json()["code"] == code, refused.text
    gone = await client.post("/v1/projects/nope/shots/batch-get", json={"ids": ["s-01"]})
    assert gone.status_code == 404 and gone.json()["code"] == "project_not_found"
