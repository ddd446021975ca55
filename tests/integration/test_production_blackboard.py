"""Every operation of the production blackboard through HTTP, end to end, on both log engines.

Project status, global spec, budget (total, costs, reservations with commit, release and expiry),
DNA bank, shots (versions and field preconditions), artifacts charging the budget, leases with
fencing tokens, dry runs and agent metadata.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx

from blackboard.config import Settings
from tests.integration.harness import command, read_events, running

P = "project:p-1"


async def ok(client: httpx.AsyncClient, type_: str, stream: str, payload: dict[str, Any], **extra: Any
             ) -> dict[str, Any]:
    response = await command(client, type_, stream, payload, **extra)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refused(client: httpx.AsyncClient, type_: str, stream: str, payload: dict[str, Any], code: str,
                  **extra: Any) -> dict[str, Any]:
    response = await command(client, type_, stream, payload, **extra)
    assert response.status_code == 409 and response.json()["code"] == code, response.text
    body: dict[str, Any] = response.json()
    return body


async def get(client: httpx.AsyncClient, path: str, token: str) -> Any:
    response = await client.get(path, headers={"Blackboard-Consistency": token})
    assert response.status_code == 200, response.text
    return response.json()


async def test_project_status_spec_and_budget(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await ok(client, "project.create", P, {"title": "Trailer", "currency": "EUR", "budget_total": "100.00",
                                               "global_spec": {"style": "noir", "fps": 24}})
        await ok(client, "project.set_status", P, {"status": "active"})
        bad = await refused(client, "project.set_status", P, {"status": "draft"}, "illegal_transition")
        assert bad["details"]["allowed"] == ["archived", "completed", "paused"]

        spec = await ok(client, "project.patch_spec", P, {"patch": {"fps": None, "ratio": "2.39"},
                                                          "expected_version": 1})
        stale = await refused(client, "project.patch_spec", P, {"patch": {"x": 1}, "expected_version": 1},
                              "version_conflict")
        assert stale["details"]["actual_version"] == 2
        got = await get(client, "/v1/projects/p-1/spec", spec["position"])
        assert got == {"project_id": "p-1", "global_spec": {"style": "noir", "ratio": "2.39"}, "version": 2}

        await ok(client, "project.add_cost", P, {"amount": "30", "reason": "storyboard"})
        await refused(client, "project.set_budget_total", P, {"total": "29.99"}, "budget_below_spent")
        total = await ok(client, "project.set_budget_total", P, {"total": "80"})
        doc = await get(client, "/v1/projects/p-1", total["position"])
        assert doc["status"] == "active" and doc["spec_version"] == 2
        assert {k: Decimal(v) for k, v in doc["budget"].items() if k != "currency"} == {
            "total": 80, "spent": 30, "reserved": 0, "remaining": 50}

        # Reserve → commit part (the rest is released) | release | expire.
        await ok(client, "project.reserve_budget", P, {"reservation_id": "r-1", "amount": "40", "reason": "render"})
        over = await refused(client, "project.add_cost", P, {"amount": "10.01", "reason": "x"}, "budget_exceeded")
        assert Decimal(over["details"]["remaining"]) == 10
        await refused(client, "project.reserve_budget", P, {"reservation_id": "r-1", "amount": "1", "reason": "x"},
                      "reservation_exists")
        await refused(client, "project.commit_reservation", P, {"reservation_id": "r-1", "amount": "40.01"},
                      "reservation_exceeded")
        committed = await ok(client, "project.commit_reservation", P, {"reservation_id": "r-1", "amount": "25"})
        assert [e["type"] for e in committed["events"]] == ["project.reservation_committed"]
        assert Decimal(committed["events"][0]["payload"]["released"]) == 15
        await refused(client, "project.release_reservation", P, {"reservation_id": "r-1"}, "reservation_not_found")
        await ok(client, "project.reserve_budget", P, {"reservation_id": "r-2", "amount": "5", "reason": "a"})
        released = await ok(client, "project.release_reservation", P, {"reservation_id": "r-2"})
        assert released["events"][0]["payload"]["why"] == "released"
        r3 = await ok(client, "project.reserve_budget", P, {"reservation_id": "r-3", "amount": "7", "reason": "b",
                                                            "ttl_seconds": 60})
        budget = await get(client, "/v1/projects/p-1/budget", r3["position"])
        assert Decimal(budget["spent"]) == 55 and Decimal(budget["reserved"]) == 7
        short = await ok(client, "project.reserve_budget", P, {"reservation_id": "r-4", "amount": "10",
                                                               "reason": "c", "ttl_seconds": 1})
        budget = await get(client, "/v1/projects/p-1/budget", short["position"])
        assert [r["reservation_id"] for r in budget["reservations"]] == ["r-4", "r-3"]
        assert (Decimal(budget["reserved"]), Decimal(budget["remaining"])) == (Decimal(17), Decimal(8))
        # r-4 expires by itself: the sweeper sends project.expire_reservations, no one calls release.
        budget = await _until(client, "/v1/projects/p-1/budget", lambda b: Decimal(b["reserved"]) == 7)
        assert [r["reservation_id"] for r in budget["reservations"]] == ["r-3"]
        history = (await client.get("/v1/streams/project:p-1/history", params={"page_size": 100})).json()["items"]
        expired = [e for e in history if e["type"] == "project.reservation_released"
                   and e["payload"]["why"] == "expired"]
        assert [e["payload"]["reservation_id"] for e in expired] == ["r-4"]
        assert expired[0]["actor"] == "blackboard:sweeper"

        await ok(client, "project.set_status", P, {"status": "archived"})
        await refused(client, "project.add_cost", P, {"amount": "1", "reason": "x"}, "project_archived")


async def _until(client: httpx.AsyncClient, path: str, done: Any, seconds: float = 10) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        doc = (await client.get(path)).json()
        if done(doc):
            return doc
        assert asyncio.get_running_loop().time() < deadline, doc
        await asyncio.sleep(0.1)


async def test_dna_bank_entries_have_versions_of_their_own(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await ok(client, "project.create", P, {"title": "T", "currency": "EUR", "budget_total": "1"})
        await ok(client, "project.put_dna", P, {"key": "hero", "value": {"face": "ref-1"}, "expected_version": 0})
        await ok(client, "project.put_dna", P, {"key": "style", "value": {"lut": "kodak"}, "expected_version": 0})
        await refused(client, "project.put_dna", P, {"key": "hero", "value": {}, "expected_version": 0},
                      "version_conflict")
        await ok(client, "project.put_dna", P, {"key": "hero", "value": {"face": "ref-2"}, "expected_version": 1})
        await refused(client, "project.remove_dna", P, {"key": "nobody", "expected_version": 1}, "dna_entry_not_found")
        removed = await ok(client, "project.remove_dna", P, {"key": "style", "expected_version": 1})
        dna = await get(client, "/v1/projects/p-1/dna", removed["position"])
        assert dna["entries"] == {"hero": {"value": {"face": "ref-2"}, "version": 2, "by": "anonymous"}}
        # A removed key goes on from its last version, so a stale writer cannot resurrect it unknowingly.
        await refused(client, "project.put_dna", P, {"key": "style", "value": {}, "expected_version": 0},
                      "version_conflict")
        again = await ok(client, "project.put_dna", P, {"key": "style", "value": {"lut": "fuji"},
                                                        "expected_version": 2})
        doc = await get(client, "/v1/projects/p-1", again["position"])
        assert doc["dna"]["style"] == {"value": {"lut": "fuji"}, "version": 3, "by": "anonymous"}


async def test_shots_with_versions_and_field_preconditions(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await ok(client, "project.create", P, {"title": "T", "currency": "EUR", "budget_total": "1"})
        await ok(client, "project.create_shot", P, {"shot_id": "s-1", "fields": {"status": "review", "scene": 1}})
        await refused(client, "project.create_shot", P, {"shot_id": "s-1", "fields": {"status": "draft"}},
                      "shot_exists")
        # Two agents edit different fields of one shot, each guarding only its own: no collision.
        await ok(client, "project.update_shot", P, {"shot_id": "s-1", "patch": {"prompt": "rain"},
                                                    "preconditions": {"prompt": None}})
        await ok(client, "project.update_shot", P, {"shot_id": "s-1", "patch": {"status": "approved"},
                                                    "preconditions": {"status": "review"}})
        conflict = await refused(client, "project.update_shot", P,
                                 {"shot_id": "s-1", "patch": {"status": "rejected"},
                                  "preconditions": {"status": "review"}}, "precondition_failed")
        assert conflict["details"] | {"shot_version": None} == {
            "shot_id": "s-1", "field": "status", "expected": "review", "actual": "approved",
            "set_by": "anonymous", "set_at_version": 3, "shot_version": None}
        assert "'status' is \"approved\", not \"review\", set by 'anonymous' at shot version 3" in conflict["message"]
        await refused(client, "project.update_shot", P, {"shot_id": "s-1", "patch": {"a": 1}, "expected_version": 1},
                      "version_conflict")
        await refused(client, "project.update_shot", P, {"shot_id": "s-9", "patch": {"a": 1},
                                                         "preconditions": {"a": None}}, "shot_not_found")
        last = await ok(client, "project.update_shot", P, {"shot_id": "s-1", "patch": {"take": 2},
                                                           "expected_version": 3})
        doc = await get(client, "/v1/projects/p-1", last["position"])
        assert doc["shots"]["s-1"] == {"status": "approved", "scene": 1, "prompt": "rain", "take": 2, "id": "s-1",
                                       "version": 4}
        assert await get(client, "/v1/projects/p-1/shots/s-1", last["position"]) == doc["shots"]["s-1"]
        for path, code in (("/v1/projects/p-1/shots/s-9", "shot_not_found"),
                           ("/v1/projects/p-9/shots/s-1", "project_not_found")):
            missing = await client.get(path)
            assert (missing.status_code, missing.json()["code"]) == (404, code)


async def test_artifacts_charge_the_budget_in_the_same_command(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        assert runtime.log is not None
        await ok(client, "project.create", P, {"title": "T", "currency": "EUR", "budget_total": "10"})
        await ok(client, "project.create_shot", P, {"shot_id": "s-1"})
        charged = await ok(client, "project.register_artifact", P, {
            "artifact_id": "a-1", "kind": "video", "uri": "s3://renders/a-1.mp4", "params": {"seed": 7},
            "cost": "4", "shot_id": "s-1"})
        assert [e["type"] for e in charged["events"]] == ["project.artifact_registered", "project.cost_added"]
        assert len({e["stream_version"] for e in charged["events"]}) == 2
        await ok(client, "project.reserve_budget", P, {"reservation_id": "r-1", "amount": "5", "reason": "render"})
        from_reservation = await ok(client, "project.register_artifact", P, {
            "artifact_id": "a-2", "kind": "image", "uri": "s3://renders/a-2.png", "cost": "3",
            "reservation_id": "r-1"})
        assert [e["type"] for e in from_reservation["events"]] == [
            "project.artifact_registered", "project.reservation_committed"]
        # Past the budget: refused, and neither the artifact nor a cost is in the log.
        before = len(await read_events(runtime.log, settings.events_topic))
        await refused(client, "project.register_artifact", P, {
            "artifact_id": "a-3", "kind": "video", "uri": "s3://renders/a-3.mp4", "cost": "3.01"}, "budget_exceeded")
        await refused(client, "project.register_artifact", P, {
            "artifact_id": "a-4", "kind": "video", "uri": "s3://x/y", "shot_id": "s-404"}, "shot_not_found")
        assert len(await read_events(runtime.log, settings.events_topic)) == before
        free = await ok(client, "project.register_artifact", P, {"artifact_id": "a-3", "kind": "thumb",
                                                                 "uri": "file:///t.png"})
        budget = await get(client, "/v1/projects/p-1/budget", free["position"])
        assert (Decimal(budget["spent"]), Decimal(budget["reserved"]), Decimal(budget["remaining"])) == (
            Decimal(7), Decimal(0), Decimal(3))

        # Indexed and listed by project, shot and kind; paged with a cursor; fields= trims each item.
        page = await get(client, "/v1/projects/p-1/artifacts?sort=id&page_size=2", free["position"])
        assert [a["artifact_id"] for a in page["items"]] == ["a-1", "a-2"] and page["next_cursor"]
        rest = await get(client, f"/v1/projects/p-1/artifacts?sort=id&page_size=2&cursor={page['next_cursor']}",
                         free["position"])
        assert [a["artifact_id"] for a in rest["items"]] == ["a-3"] and "next_cursor" not in rest
        by_shot = await get(client, "/v1/projects/p-1/artifacts?shot_id=s-1&fields=artifact_id,cost,params.seed",
                            free["position"])
        assert by_shot["items"] == [{"artifact_id": "a-1", "cost": "4", "params": {"seed": 7}}]
        by_kind = await get(client, "/v1/projects/p-1/artifacts?kind=image", free["position"])
        assert [(a["artifact_id"], a["reservation_id"]) for a in by_kind["items"]] == [("a-2", "r-1")]
        wrong = await client.get("/v1/projects/p-1/artifacts", params={"sort": "uri"})
        assert (wrong.status_code, wrong.json()["code"]) == (422, "invalid_sort")
        missing = await client.get("/v1/projects/nope/artifacts")
        assert (missing.status_code, missing.json()["code"]) == (404, "project_not_found")


async def test_projects_are_listed_paged_filtered_and_trimmed(settings: Settings) -> None:
    async with running(settings) as (client, _):
        last = {}
        for n in range(5):
            last = await ok(client, "project.create", f"project:p-{n}",
                            {"title": f"T{n % 2}", "currency": "EUR", "budget_total": "10"})
        for n in (1, 3):
            last = await ok(client, "project.set_status", f"project:p-{n}", {"status": "active"})
        active = await get(client, "/v1/projects?status=active&fields=id,status,budget.remaining", last["position"])
        assert active["items"] == [{"id": "p-1", "status": "active", "budget": {"remaining": "10"}},
                                   {"id": "p-3", "status": "active", "budget": {"remaining": "10"}}]
        seen, cursor = [], None
        while True:
            after = f"&cursor={cursor}" if cursor else ""
            page = await get(client, f"/v1/projects?sort=-title,id&page_size=2{after}", last["position"])
            seen += [(p["title"], p["id"]) for p in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        assert seen == [("T1", "p-1"), ("T1", "p-3"), ("T0", "p-0"), ("T0", "p-2"), ("T0", "p-4")]
        bad = await client.get("/v1/projects", params={"status": "exploded"})
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_filter")


async def test_leases_grant_growing_fencing_tokens_and_expire_by_themselves(settings: Settings) -> None:
    async with running(settings) as (client, _):
        lease = "lease:render-farm"
        first = await ok(client, "lease.acquire", lease, {"holder": "agent-a", "ttl_seconds": 30})
        token = first["events"][0]["payload"]["token"]
        assert token == 1
        held = await refused(client, "lease.acquire", lease, {"holder": "agent-b"}, "lease_held")
        assert held["details"]["holder"] == "agent-a"
        await ok(client, "lease.renew", lease, {"holder": "agent-a", "token": 1, "ttl_seconds": 30})
        await refused(client, "lease.renew", lease, {"holder": "agent-b", "token": 1}, "lease_lost")
        released = await ok(client, "lease.release", lease, {"holder": "agent-a", "token": 1})
        view = await get(client, "/v1/leases/render-farm", released["position"])
        assert (view["held"], view["holder"], view["token"]) == (False, None, 1)
        second = await ok(client, "lease.acquire", lease, {"holder": "agent-b", "ttl_seconds": 1})
        assert second["events"][0]["payload"]["token"] == 2
        await asyncio.sleep(1.1)
        # Nobody released it: it is free because its time is up, and the next grant has a higher token.
        view = await get(client, "/v1/leases/render-farm", second["position"])
        assert view["held"] is False
        third = await ok(client, "lease.acquire", lease, {"holder": "agent-a"})
        assert [(e["type"], e["payload"]["token"]) for e in third["events"]] == [
            ("lease.released", 2), ("lease.granted", 3)]
        await refused(client, "lease.renew", lease, {"holder": "agent-b", "token": 2}, "lease_lost")
        missing = await client.get("/v1/leases/nothing-here")
        assert missing.status_code == 404 and missing.json()["code"] == "lease_not_found"


async def test_a_dry_run_shows_what_would_happen_and_appends_nothing(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        assert runtime.log is not None
        created = await ok(client, "project.create", P, {"title": "T", "currency": "EUR", "budget_total": "10"})
        before = len(await read_events(runtime.log, settings.events_topic))
        dry = await ok(client, "project.add_cost", P, {"amount": "4", "reason": "r"}, dry_run=True,
                       command_id="plan-1")
        assert dry["outcome"] == "dry_run" and dry["would"] == "accepted" and dry["version"] == 2
        assert [e["type"] for e in dry["events"]] == ["project.cost_added"]
        assert {"path": "/budget/spent", "op": "replace", "from": "0", "to": "4"} in dry["changes"]
        assert {"rule": "amount <= remaining (total - spent - reserved)", "passed": True} in dry["checks"]
        no = await ok(client, "project.add_cost", P, {"amount": "11", "reason": "r"}, dry_run=True)
        assert (no["would"], no["code"], no["events"]) == ("rejected", "budget_exceeded", [])
        assert {"rule": "amount <= remaining (total - spent - reserved)", "passed": False} in no["checks"]
        assert len(await read_events(runtime.log, settings.events_topic)) == before
        # The id of a dry run is not used up: the real command with it is decided for the first time.
        real = await ok(client, "project.add_cost", P, {"amount": "4", "reason": "r"}, command_id="plan-1")
        assert real["outcome"] == "accepted" and real["version"] == 2
        doc = await get(client, "/v1/projects/p-1", real["position"])
        assert Decimal(doc["budget"]["spent"]) == 4 and created["version"] == 1


async def test_agent_metadata_travels_in_the_headers_and_shows_in_history(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        assert runtime.log is not None
        agent = {"run_id": "run-42", "model": "gpt-x", "prompt_hash": "sha256:ab12"}
        done = await ok(client, "project.create", P, {"title": "T", "currency": "EUR", "budget_total": "1"},
                        agent=agent)
        [event] = await read_events(runtime.log, settings.events_topic)
        env = event.envelope
        assert (env.agent_run_id, env.agent_model, env.prompt_hash) == ("run-42", "gpt-x", "sha256:ab12")
        history = await get(client, "/v1/streams/project:p-1/history", done["position"])
        entry = history["items"][0]
        assert (entry["agent_run_id"], entry["agent_model"], entry["prompt_hash"]) == ("run-42", "gpt-x", "sha256:ab12")
        bad = await command(client, "project.add_cost", P, {"amount": "1", "reason": "r"},
                            agent={"run_id": "has space"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["path"] == "$.agent.run_id"
