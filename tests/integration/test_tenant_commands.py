"""Tenants on the command side: a node claims only its tenant's tasks, graphs, dependencies, checkpoints,
heartbeats and rollbacks stay in the caller's tenant, the process managers work inside a tenant, a command on the
commands topic lands in its tenant's stream, and a push subscription sends only the caller's entries, in its ids.
Another tenant's id answers as an id that exists nowhere (asked before it existed, and after)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest
from pydantic import SecretStr

from blackboard.app import Runtime
from blackboard.command_api.owner import submission
from blackboard.command_api.routing import command_record
from blackboard.config import Settings
from blackboard.domain.decoding import validate_command
from blackboard.events.log import Record
from blackboard.events.partitioner import partition_for
from blackboard.schemas.envelope import RecordedEvent, decode_token, encode_token, stream_partition_key
from tests.integration.harness import read_events, running, serving, settings_for

KEYS = SecretStr("k-acme=alice:rw:acme,k-beta=bob:rw:beta,k-void=vic:rw:void,k-default=dora:rw")
ACME, BETA, VOID, DEFAULT = ({"X-API-Key": k} for k in ("k-acme", "k-beta", "k-void", "k-default"))
#: Fields of an answer that differ between two requests whatever they ask.
_PER_REQUEST = ("request_id", "instance", "command_id")


@pytest.fixture
def settings(pg_url: str, topic_prefix: str) -> Settings:
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, api_keys=KEYS)


def same_answer(one: httpx.Response, other: httpx.Response) -> bool:
    """Status and body equal, what differs per request aside."""
    def body(r: httpx.Response) -> Any:
        return {k: v for k, v in r.json().items() if k not in _PER_REQUEST} if r.content else None
    return one.status_code == other.status_code and body(one) == body(other)


async def send(client: httpx.AsyncClient, who: dict[str, str], type_: str, stream: str, payload: dict[str, Any],
               **extra: Any) -> httpx.Response:
    return await client.post("/v1/commands", json={"type": type_, "stream": stream, "payload": payload, **extra},
                             headers=who)


async def ok(client: httpx.AsyncClient, who: dict[str, str], type_: str, stream: str, payload: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    answer = await send(client, who, type_, stream, payload, **extra)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def merged(*tokens: str) -> str:
    positions: dict[int, int] = {}
    for token in tokens:
        for p, o in decode_token(token).items():
            positions[p] = max(positions.get(p, -1), o)
    return encode_token(positions)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s: {what}")


async def events_of(runtime: Runtime) -> list[RecordedEvent]:
    assert runtime.log is not None
    return await read_events(runtime.log, runtime.settings.events_topic)


def payload_of(e: RecordedEvent) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(e.envelope.payload)
    return decoded


async def claim(client: httpx.AsyncClient, who: dict[str, str], node: str, token: str | None = None
                ) -> httpx.Response:
    return await client.post(f"/v1/nodes/{node}/claim", json={}, headers=who,
                             params={"consistent_with": token} if token else {})


# ── claims and heartbeats ───────────────────────────────────────────────────────────────


async def test_a_node_claims_only_its_own_tenants_tasks(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        ghost_claim = await claim(client, VOID, "n-1")  # before anyone has a node n-1
        ghost_beat = await client.post("/v1/nodes/n-1/heartbeat", json={}, headers=VOID)
        tokens = []
        for who in (ACME, BETA, DEFAULT):
            await ok(client, who, "node.register", "node:n-1", {"hostname": "h"})
        # Higher priorities in the other tenants: a claim that looked beyond its tenant would take theirs first.
        for who, name, priority in ((DEFAULT, "default", 9), (BETA, "beta", 5), (ACME, "acme", 1)):
            made = await ok(client, who, "task.create", "task:t-1", {"name": name, "priority": priority})
            tokens.append(made["position"])
        tokens.append((await ok(client, ACME, "task.create", "task:t-2", {"name": "acme"}))["position"])
        seen = merged(*tokens)

        # A node of another tenant is a node that does not exist.
        assert (ghost_claim.status_code, ghost_claim.json()["code"]) == (404, "node_not_found")
        assert same_answer(await claim(client, VOID, "n-1", seen), ghost_claim)
        assert same_answer(await client.post("/v1/nodes/n-1/heartbeat", json={}, headers=VOID), ghost_beat)

        first, second = await claim(client, ACME, "n-1", seen), await claim(client, ACME, "n-1", seen)
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        assert [(c.json()["task_id"], c.json()["name"], c.json()["token"]) for c in (first, second)] == [
            ("t-1", "acme", 1), ("t-2", "acme", 1)]
        assert "acme~" not in first.text
        assert (await claim(client, ACME, "n-1", seen)).status_code == 204, "the other tenants' tasks stay theirs"
        assert (await claim(client, BETA, "n-1", seen)).json()["name"] == "beta"
        assert (await claim(client, DEFAULT, "n-1", seen)).json()["name"] == "default"

        # The claim is the tenant's own command: it names its node and task as stored, under the tenant.
        done = await send(client, ACME, "task.complete", "task:t-1", {"token": 1})
        assert done.status_code == 200 and done.json()["stream"] == "task:t-1", done.text
        beat = await client.post("/v1/nodes/n-1/heartbeat", json={"load": 1}, headers=ACME)
        assert beat.status_code == 200, beat.text
        events = await events_of(runtime)
    claimed = {(e.envelope.stream, e.envelope.tenant, payload_of(e)["node"]) for e in events
               if e.envelope.type == "task.claimed"}
    assert claimed == {("task:acme~t-1", "acme", "acme~n-1"), ("task:acme~t-2", "acme", "acme~n-1"),
                       ("task:beta~t-1", "beta", "beta~n-1"), ("task:t-1", "default", "n-1")}
    assert not any(e.envelope.stream.count("~") > 1 for e in events), "no id is scoped twice"


# ── graphs, dependencies, node expiry and the saga inside a tenant ──────────────────────


async def test_dependencies_expiry_and_the_saga_work_inside_a_tenant(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        nothing_yet = await client.post("/v1/task-graphs", headers=VOID, json={"tasks": [
            {"id": "t-3", "name": "x", "depends_on": ["t-1"]}]})
        nothing_yet_cmd = await send(client, VOID, "task.create", "task:t-3", {"name": "x", "depends_on": ["t-1"]})
        # The dependants need a skill the tenant's node lacks: its second claim can only be the saga's task.
        graph = await client.post("/v1/task-graphs", headers=ACME, json={"tasks": [
            {"id": "t-2", "name": "second", "depends_on": ["t-1"], "required_skills": ["gpu"]},
            {"id": "t-1", "name": "first"}]})
        assert graph.status_code == 200 and [t["outcome"] for t in graph.json()["tasks"]] == ["accepted"] * 2
        assert {t["id"] for t in graph.json()["tasks"]} == {"t-1", "t-2"}
        # A dependency on another tenant's task is one on a task that does not exist, in a graph and alone.
        for who in (BETA, VOID):
            theirs = await client.post("/v1/task-graphs", headers=who, json={"tasks": [
                {"id": "t-3", "name": "x", "depends_on": ["t-1"]}]})
            assert theirs.json()["code"] == "unknown_dependency" and same_answer(theirs, nothing_yet)
            alone = await send(client, who, "task.create", "task:t-3", {"name": "x", "depends_on": ["t-1"]})
            assert alone.json()["code"] == "unknown_dependency" and same_answer(alone, nothing_yet_cmd)
        # Outside a graph, the tenant's own dependency is found.
        await ok(client, ACME, "task.create", "task:t-3", {"name": "third", "depends_on": ["t-1"],
                                                           "required_skills": ["gpu"]})

        # A saga of the tenant: its budget, its task, its artifact (its task fails: the saga compensates).
        await ok(client, ACME, "project.create", "project:p-1", {"title": "t", "currency": "EUR",
                                                                 "budget_total": "100.00"})
        made = await ok(client, ACME, "saga.start_artifact", "saga:s-1", {
            "project_id": "p-1", "amount": "10.00", "task": {"name": "render", "max_attempts": 1},
            "artifact": {"artifact_id": "a-1", "kind": "video", "uri": "s3://bucket/a-1.mp4"}})

        async def task(task_id: str, who: dict[str, str] = ACME) -> httpx.Response:
            return await client.get(f"/v1/tasks/{task_id}", headers=who)

        async def status(task_id: str) -> str:
            answer = await task(task_id)
            return str(answer.json()["status"]) if answer.status_code == 200 else "missing"

        await ok(client, ACME, "node.register", "node:n-1", {"hostname": "h", "ttl_seconds": 1})
        first = await claim(client, ACME, "n-1", merged(made["position"],
                                                        *(t["position"] for t in graph.json()["tasks"])))
        assert first.json()["task_id"] == "t-1", first.text  # t-2 and t-3 are blocked, the saga's task not there
        await ok(client, ACME, "task.complete", "task:t-1", {"token": first.json()["token"]})
        await eventually(lambda: _all(status, {"t-2": "pending", "t-3": "pending", "saga-s-1": "pending"}),
                         "t-1's dependants unblocked, the saga's task created")
        assert (await client.post("/v1/nodes/n-1/heartbeat", json={}, headers=ACME)).status_code == 200
        render = await claim(client, ACME, "n-1")
        assert render.json()["task_id"] == "saga-s-1", render.text
        claimed = await client.get("/v1/tasks/saga-s-1", headers=ACME,
                                   params={"consistent_with": render.json()["position"]})
        assert claimed.json()["status"] == "claimed"
        # The node falls silent: it goes offline, its task is released (failed: one attempt), the saga gives the
        # money back.
        async def compensated() -> bool:
            history = await client.get("/v1/streams/saga:s-1/history", headers=ACME)
            return [e["payload"].get("outcome") for e in history.json()["items"]][-1:] == ["compensated"]

        await eventually(compensated, "the saga compensated after the silent node's task failed")
        history = await client.get("/v1/streams/saga:s-1/history", headers=ACME)
        assert "acme~" not in history.text

        async def given_back() -> bool:
            budget = (await client.get("/v1/projects/p-1/budget", headers=ACME)).json()
            return Decimal(budget["reserved"]) == Decimal(budget["spent"]) == 0

        await eventually(given_back, "the saga's reservation released")
        for task_id in ("t-1", "t-2", "saga-s-1"):
            for who in (BETA, VOID, DEFAULT):
                assert (await task(task_id, who)).status_code == 404
        events = await events_of(runtime)
    sent = [e for e in events if e.envelope.actor.startswith("process:") and e.envelope.stream != "clock:main"]
    assert {e.envelope.type for e in sent} >= {"task.unblocked", "node.went_offline", "task.attempt_failed",
                                               "project.budget_reserved", "task.created",
                                               "project.reservation_released", "saga.finished"}
    assert {e.envelope.tenant for e in sent} == {"acme"}, "the managers send as the tenant"
    assert all(e.envelope.stream.split(":", 1)[1].startswith("acme~") for e in sent)
    assert not any(e.envelope.stream.count("~") > 1 for e in events), "no id is scoped twice"


async def _all(status: Callable[[str], Awaitable[str]], expected: dict[str, str]) -> bool:
    return all([await status(t) == s for t, s in expected.items()])


# ── checkpoints ─────────────────────────────────────────────────────────────────────────


async def test_checkpoints_are_their_tenants(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        def put(who: dict[str, str], data: bytes) -> Awaitable[httpx.Response]:
            return client.put("/v1/checkpoints/th-1", content=data, headers={
                **who, "content-type": "application/octet-stream"})

        def restore(who: dict[str, str], key: str) -> Awaitable[httpx.Response]:
            return client.post("/v1/checkpoints/th-1/restore", json={"seq": 1}, headers={**who, "Idempotency-Key": key})

        nowhere = await restore(VOID, "r-0")
        a, b = await put(ACME, b"acme state"), await put(BETA, b"beta state")
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert (a.json()["stream"], a.json()["seq"]) == (b.json()["stream"], b.json()["seq"]) == ("checkpoint:th-1", 1)
        assert a.json()["sha256"] != b.json()["sha256"]
        assert (nowhere.status_code, nowhere.json()["code"]) == (409, "not_found")
        for who, key in ((VOID, "r-1"), (DEFAULT, "r-2")):
            assert same_answer(await restore(who, key), nowhere)
        again = await restore(ACME, "r-3")
        assert again.status_code == 200 and again.json()["seq"] == 2 and "acme~" not in again.text
        assert runtime.commands is not None
        versions = {s: (found[1] if (found := runtime.commands.peek(s)) else None)
                    for s in ("checkpoint:acme~th-1", "checkpoint:beta~th-1", "checkpoint:th-1")}
        assert versions == {"checkpoint:acme~th-1": 2, "checkpoint:beta~th-1": 1, "checkpoint:th-1": None}


# ── rollbacks ───────────────────────────────────────────────────────────────────────────


async def test_a_rollback_and_the_sweeper_act_only_inside_the_callers_tenant(settings: Settings) -> None:
    run = {"run_id": "run-1", "model": "m"}
    async with running(settings) as (client, runtime):
        nowhere = await client.post("/v1/runs/run-1/rollback", json={"dry_run": True}, headers=VOID)
        tokens = []
        for who in (ACME, BETA):
            await ok(client, who, "project.create", "project:p-1", {"title": "t", "currency": "EUR",
                                                                    "budget_total": "100.00"})
            await ok(client, who, "project.create_shot", "project:p-1", {"shot_id": "s-1",
                                                                         "fields": {"status": "todo"}})
            # The same run id in both tenants: each tenant's rollback is its own.
            done = await ok(client, who, "project.update_shot", "project:p-1", {
                "shot_id": "s-1", "patch": {"status": "done"}, "preconditions": {}}, agent=run)
            tokens.append(done["position"])
        seen = merged(*tokens)
        assert (nowhere.status_code, nowhere.json()["code"]) == (404, "run_not_found")
        for who in (VOID, DEFAULT):
            theirs = await client.post("/v1/runs/run-1/rollback", json={"consistent_with": seen}, headers=who)
            assert same_answer(theirs, nowhere), theirs.text
            assert same_answer(await client.post("/v1/runs/run-1/rollback", json={"dry_run": True}, headers=who),
                               nowhere)

        plan = await client.post("/v1/runs/run-1/rollback", json={"dry_run": True, "consistent_with": seen},
                                 headers=ACME)
        assert plan.status_code == 200, plan.text
        assert [(c["stream"], c["type"]) for c in plan.json()["commands"]] == [("project:p-1", "project.update_shot")]
        assert "acme~" not in plan.text and "beta" not in plan.text
        applied = await client.post("/v1/runs/run-1/rollback", json={}, headers=ACME)
        assert [c["status"] for c in applied.json()["commands"]] == ["accepted"], applied.text
        after = applied.json()["commands"][0]["position"]
        shots = {who["X-API-Key"]: (await client.get("/v1/projects/p-1/shots/s-1", headers=who,
                                                     params={"consistent_with": merged(seen, after)})).json()
                 for who in (ACME, BETA)}
        assert (shots["k-acme"]["status"], shots["k-beta"]["status"]) == ("todo", "done")

        # The reservation sweeper, too, acts inside the project's tenant.
        await ok(client, ACME, "project.reserve_budget", "project:p-1", {
            "reservation_id": "r-1", "amount": "1.00", "reason": "render", "ttl_seconds": 1})

        async def swept() -> bool:
            return any(e.envelope.actor == "blackboard:sweeper" for e in await events_of(runtime))

        await eventually(swept, "the expired reservation released by the sweeper")
        events = await events_of(runtime)
    undone = [e for e in events if e.envelope.correlation_id == applied.json()["rollback_id"]]
    assert [(e.envelope.stream, e.envelope.tenant, e.envelope.actor) for e in undone] == [
        ("project:acme~p-1", "acme", "alice")]
    sweeps = [e.envelope for e in events if e.envelope.actor == "blackboard:sweeper"]
    assert [(e.type, e.stream, e.tenant, e.command_id.rsplit(":", 1)[0]) for e in sweeps] == [
        ("project.reservation_released", "project:acme~p-1", "acme", "acme~expire-reservations:p-1")]


# ── the commands topic ──────────────────────────────────────────────────────────────────


@pytest.fixture(params=["postgres", "kafka"])
def topic_settings(request: pytest.FixtureRequest, pg_url: str, topic_prefix: str) -> Settings:
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return settings_for(request.param, pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka, api_keys=KEYS)


async def test_a_command_on_the_commands_topic_lands_in_its_tenants_stream(topic_settings: Settings) -> None:
    async with running(topic_settings) as (client, runtime):
        assert runtime.log is not None
        # As another process routes it (command_record), and as a foreign producer writes it (a tenant header).
        valid = validate_command(msgspec.json.encode({
            "type": "project.create", "stream": "project:p-1", "command_id": "c-1",
            "payload": {"title": "routed", "currency": "EUR", "budget_total": "10.00"}}))
        routed = submission(valid.request, valid.payload, actor="alice", tenant="acme")
        written = [command_record(routed, routed_by="elsewhere"),
                   Record(key=b"acme~p-1", value=msgspec.json.encode({
                       "type": "project.add_cost", "stream": "project:p-1", "command_id": "c-2",
                       "payload": {"amount": "4.00", "reason": "from the topic"}}),
                       headers=(("tenant", b"acme"), ("actor", b"producer"))),
                   Record(key=b"acme~p-1", value=b'{"type": "project.add_cost", "stream": "project:p-1", '
                                                 b'"command_id": "c-3", "payload": {}}',
                          headers=(("tenant", b"acme"),))]
        partition = partition_for(stream_partition_key("project:acme~p-1"), runtime.partitions)
        await runtime.log.append(topic_settings.commands_topic, partition, written)

        async def outcome(command_id: str) -> dict[str, Any]:
            answer: dict[str, Any] = {}

            async def known() -> bool:
                nonlocal answer
                r = await client.get(f"/v1/commands/{command_id}", headers=ACME)
                answer = r.json() if r.status_code == 200 else {}
                return bool(answer)

            await eventually(known, f"{command_id} answered")
            return answer

        first, second, bad = await outcome("c-1"), await outcome("c-2"), await outcome("c-3")
        assert (first["outcome"], first["stream"], first["command_id"]) == ("accepted", "project:p-1", "c-1")
        assert (second["outcome"], second["version"]) == ("accepted", 2)
        assert (bad["outcome"], bad["code"]) == ("rejected", "invalid_command")
        for command_id in ("c-1", "c-2", "c-3"):
            for who in (BETA, DEFAULT):
                assert (await client.get(f"/v1/commands/{command_id}", headers=who)).status_code == 404
        budget = await client.get("/v1/projects/p-1/budget", headers=ACME,
                                  params={"consistent_with": second["position"]})
        assert budget.json()["spent"] == "4.00"
        for who in (BETA, DEFAULT):
            assert (await client.get("/v1/projects/p-1/budget", headers=who)).status_code == 404
        events = await events_of(runtime)
    assert [(e.envelope.stream, e.envelope.tenant, e.envelope.actor) for e in events
            if e.envelope.stream.startswith("project:")] == [("project:acme~p-1", "acme", "alice"),
                                                            ("project:acme~p-1", "acme", "producer")]


# ── push ────────────────────────────────────────────────────────────────────────────────


@asynccontextmanager
async def listening(client: httpx.AsyncClient, path: str, who: dict[str, str]
                    ) -> AsyncIterator[tuple[list[dict[str, Any]], httpx.Response]]:
    """An open SSE subscription; the entries it has sent so far, as they arrive."""
    entries: list[dict[str, Any]] = []
    opened: asyncio.Future[httpx.Response] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        async with client.stream("GET", path, headers=who) as response:
            opened.set_result(response)
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    entries.append(msgspec.json.decode(line[6:]))

    task = asyncio.create_task(read())
    try:
        yield entries, await asyncio.wait_for(asyncio.shield(opened), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_push_sends_only_the_callers_entries_in_its_own_ids(settings: Settings) -> None:
    async with serving(settings) as (client, _, _):
        made = await ok(client, ACME, "project.create", "project:p-1", {"title": "t", "currency": "EUR",
                                                                        "budget_total": "10.00"})
        async with (listening(client, "/v1/projects/p-1/changes", ACME) as (own, own_response),
                    listening(client, "/v1/projects/p-1/changes", BETA) as (beta, beta_response),
                    listening(client, "/v1/streams/project:p-1/changes", VOID) as (void, void_response),
                    listening(client, "/v1/projects/p-9/changes", ACME) as (nowhere, nowhere_response)):
            responses = (own_response, beta_response, void_response, nowhere_response)
            assert {(r.status_code, r.headers["content-type"].split(";")[0]) for r in responses} == {
                (200, "text/event-stream")}
            cost = await ok(client, ACME, "project.add_cost", "project:p-1", {"amount": "1.00", "reason": "r"})

            async def both() -> bool:
                return len(own) == 2

            await eventually(both, "acme's two entries pushed")
            await asyncio.sleep(0.3)  # what another subscription would have been sent by now, it has been
            assert beta == void == nowhere == []
            # A stored id is no name any caller may use: refused alike for every tenant, the default one too.
            for who in (DEFAULT, ACME):
                stored = await client.get("/v1/streams/project:acme~p-1/changes", headers=who)
                assert (stored.status_code, stored.json()["code"]) == (422, "invalid_stream")
        assert [(e["stream"], e["version"], e["command_id"]) for e in own] == [
            ("project:p-1", 1, made["command_id"]), ("project:p-1", 2, cost["command_id"])]
        assert "acme~" not in msgspec.json.encode(own).decode()
