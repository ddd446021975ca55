"""The agent cluster over real services: claims by many workers, dependencies, lease expiry, nodes going
offline, heartbeats that do not flood the log, budget alerts and the artifact saga."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import msgspec
from blackboard_client.worker import ClaimedTask, Worker

from blackboard.app import Runtime
from blackboard.config import Settings
from blackboard.schemas.envelope import RecordedEvent
from tests.integration.harness import command, read_events, running

SKILLS: tuple[list[str], ...] = ([], ["gpu"], ["cpu"])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached within {timeout} s: {what}")


def body(e: RecordedEvent) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(e.envelope.payload)
    return decoded


async def events_of(runtime: Runtime) -> list[RecordedEvent]:
    assert runtime.log is not None
    return await read_events(runtime.log, runtime.settings.events_topic)


async def graph(client: httpx.AsyncClient, tasks: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/v1/task-graphs", json={"tasks": tasks})


async def task_of(client: httpx.AsyncClient, task_id: str, token: str | None = None) -> dict[str, Any]:
    params = {"consistent_with": token} if token else {}
    response = await client.get(f"/v1/tasks/{task_id}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def done_handler(task: ClaimedTask, worker: Worker) -> dict[str, Any]:
    return {"by": worker.node_id}


def workers_for(client: httpx.AsyncClient, count: int, skills: list[list[str]], **extra: Any) -> list[Worker]:
    return [Worker("http://blackboard.test", f"w-{i}", done_handler, skills=skills[i % len(skills)], client=client,
                   idle_seconds=0.05, **extra) for i in range(count)]


# ── claims ──────────────────────────────────────────────────────────────────────────────


async def test_ten_workers_claim_a_thousand_tasks_each_once_in_priority_order(settings: Settings) -> None:
    rng = random.Random(7)
    # Drawn in the same order as when the dicts were built inline: the same seed gives the same tasks.
    drawn = [(f"t-{i}", rng.randrange(10), rng.choice(SKILLS)) for i in range(1000)]
    tasks = [{"id": task_id, "name": "work", "priority": p, "required_skills": skills} for task_id, p, skills in drawn]
    priority = {task_id: p for task_id, p, _ in drawn}
    needs = {task_id: set(skills) for task_id, _, skills in drawn}
    async with running(settings) as (client, runtime):
        created = await graph(client, tasks)
        assert created.status_code == 200, created.text
        assert all(t["outcome"] == "accepted" for t in created.json()["tasks"])
        last = created.json()["tasks"][-1]["position"]
        await client.get("/v1/tasks/t-999", params={"consistent_with": last})
        workers = workers_for(client, 10, [["gpu"], ["cpu"], ["gpu", "cpu"]])
        stop = asyncio.Event()
        runs = [asyncio.create_task(w.run(stop=stop)) for w in workers]

        async def all_done() -> bool:
            return sum(len(w.completed) for w in workers) >= 1000

        try:
            await eventually(all_done, timeout=240, what="1000 tasks completed")
        finally:
            stop.set()
            await asyncio.gather(*runs)
        events = await events_of(runtime)
    claims = [e for e in events if e.envelope.type == "task.claimed"]
    succeeded = Counter(e.envelope.stream for e in events if e.envelope.type == "task.succeeded")
    assert len(succeeded) == 1000 and set(succeeded.values()) == {1}, "every task completed exactly once"
    assert Counter(e.envelope.stream for e in claims) == Counter({f"task:{t['id']}": 1 for t in tasks}), \
        "each task was claimed by exactly one worker"
    skills_of = {w.node_id: set(w.skills) for w in workers}
    timeline = sorted(claims, key=lambda e: e.envelope.occurred_at)
    for i, claim in enumerate(timeline):
        task_id = claim.envelope.stream.partition(":")[2]
        node = body(claim)["node"]
        assert needs[task_id] <= skills_of[node], "a worker only gets tasks whose skills it offers"
        # Higher-priority tasks this worker could do that were still unclaimed: only the claims in flight at
        # the same moment (one per other worker) may overtake a claim.
        later_higher = [c for c in timeline[i + 1:]
                        if priority[c.envelope.stream.partition(":")[2]] > priority[task_id]
                        and needs[c.envelope.stream.partition(":")[2]] <= skills_of[node]]
        assert len(later_higher) < len(workers), (task_id, priority[task_id], len(later_higher))


async def test_a_claim_needs_a_registered_online_node_and_answers_204_when_nothing_fits(settings: Settings) -> None:
    async with running(settings) as (client, _):
        assert (await client.post("/v1/nodes/ghost/claim", json={})).json()["code"] == "node_not_found"
        await command(client, "node.register", "node:n-1", {"hostname": "h", "skills": ["cpu"]})
        await command(client, "task.create", "task:g-1", {"name": "gpu only", "required_skills": ["gpu"]})
        assert (await client.post("/v1/nodes/n-1/claim", json={})).status_code == 204
        stale = await client.post("/v1/commands", json={
            "type": "task.complete", "stream": "task:g-1", "payload": {"token": 1}})
        assert stale.status_code == 409 and stale.json()["code"] == "lease_lost"


# ── dependencies ────────────────────────────────────────────────────────────────────────


def dag(size: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    tasks = []
    for i in range(size):
        deps = sorted({f"d-{rng.randrange(i)}" for _ in range(rng.randrange(4))}) if i else []
        tasks.append({"id": f"d-{i}", "name": f"step {i}", "depends_on": deps, "priority": rng.randrange(5)})
    rng.shuffle(tasks)
    return tasks


async def test_a_dag_of_120_tasks_runs_no_task_before_its_dependencies(settings: Settings) -> None:
    tasks = dag(120, seed=3)
    async with running(settings) as (client, runtime):
        cycle = await graph(client, [{"id": "a", "name": "a", "depends_on": ["c"]},
                                     {"id": "b", "name": "b", "depends_on": ["a"]},
                                     {"id": "c", "name": "c", "depends_on": ["b"]}])
        assert cycle.status_code == 422 and cycle.json()["code"] == "dependency_cycle", cycle.text
        assert (await client.get("/v1/tasks/a")).status_code == 404, "nothing of a refused graph is created"
        unknown = await command(client, "task.create", "task:x", {"name": "x", "depends_on": ["nowhere"]})
        assert unknown.status_code == 422 and unknown.json()["code"] == "unknown_dependency"
        created = await graph(client, tasks)
        assert created.status_code == 200 and all(t["outcome"] == "accepted" for t in created.json()["tasks"])
        workers = workers_for(client, 4, [[]])
        stop = asyncio.Event()
        runs = [asyncio.create_task(w.run(stop=stop)) for w in workers]
        try:
            await eventually(lambda: _completed(workers, 120), timeout=120, what="the DAG completed")
        finally:
            stop.set()
            await asyncio.gather(*runs)
        events = await events_of(runtime)
    at: dict[tuple[str, str], Any] = {}
    for e in events:
        at.setdefault((e.envelope.stream, e.envelope.type), e.envelope.occurred_at)
    for t in tasks:
        claimed = at[(f"task:{t['id']}", "task.claimed")]
        for dep in t["depends_on"]:
            assert at[(f"task:{dep}", "task.succeeded")] <= claimed, (t["id"], dep)
    unblocked = Counter(e.envelope.stream for e in events if e.envelope.type == "task.unblocked")
    assert set(unblocked.values()) == {1}, "each dependant was released once"


async def _completed(workers: list[Worker], total: int) -> bool:
    return sum(len(w.completed) for w in workers) >= total


async def test_a_failed_dependency_fails_or_blocks_its_dependants_by_their_rule(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await command(client, "node.register", "node:n-1", {"hostname": "h"})
        await command(client, "task.create", "task:root", {"name": "root", "max_attempts": 1})
        await command(client, "task.create", "task:child", {"name": "c", "depends_on": ["root"]})
        await command(client, "task.create", "task:patient", {"name": "p", "depends_on": ["root"],
                                                               "on_dependency_failure": "block"})
        made = await command(client, "task.create", "task:grandchild", {"name": "g", "depends_on": ["child"]})
        claim = await client.post("/v1/nodes/n-1/claim", json={},
                                  params={"consistent_with": made.json()["position"]})
        assert claim.json()["task_id"] == "root"
        failed = await command(client, "task.fail", "task:root", {"token": claim.json()["token"], "error": "boom"})
        assert failed.status_code == 200

        async def settled() -> bool:
            statuses = [(await task_of(client, t))["status"] for t in ("root", "child", "grandchild", "patient")]
            return statuses == ["failed", "failed", "failed", "blocked"]

        await eventually(settled, what="failure passed on to the dependants that fail with it")
        child = await task_of(client, "child")
        assert child["error"] == "dependency root failed"


# ── leases and nodes ────────────────────────────────────────────────────────────────────


async def test_a_claim_without_progress_expires_back_to_pending_then_fails_after_its_last_attempt(
        settings: Settings) -> None:
    async with running(settings) as (client, _):
        await command(client, "node.register", "node:n-1", {"hostname": "h", "ttl_seconds": 60})
        made = await command(client, "task.create", "task:slow",
                             {"name": "slow", "max_attempts": 2, "retry_backoff_seconds": 0, "lease_seconds": 1})
        first = (await client.post("/v1/nodes/n-1/claim", json={},
                                   params={"consistent_with": made.json()["position"]})).json()
        assert first["token"] == 1

        async def status_is(status: str, attempts: int) -> bool:
            t = await task_of(client, "slow")
            return bool(t["status"] == status and t["attempts"] == attempts)

        await eventually(lambda: status_is("pending", 1), what="the expired claim went back to pending")
        late = await command(client, "task.complete", "task:slow", {"token": 1})
        assert late.status_code == 409 and late.json()["code"] == "lease_lost", "the old token is fenced off"
        second = (await client.post("/v1/nodes/n-1/claim", json={})).json()
        assert second["token"] == 2
        await eventually(lambda: status_is("failed", 2), what="failed after its last attempt")


async def test_heartbeats_are_coalesced_and_a_silent_node_goes_offline_releasing_its_tasks(
        settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        await command(client, "node.register", "node:n-1", {"hostname": "h", "ttl_seconds": 2, "skills": ["gpu"]})
        for _ in range(40):
            assert (await client.post("/v1/nodes/n-1/heartbeat", json={"load": 0})).status_code == 200
        made = await command(client, "task.create", "task:held", {"name": "held", "lease_seconds": 600})
        claim = (await client.post("/v1/nodes/n-1/claim", json={},
                                   params={"consistent_with": made.json()["position"]})).json()
        online = await client.get("/v1/nodes", params={"status": "online", "skill": "gpu"})
        assert [n["id"] for n in online.json()["items"]] in ([], ["n-1"])

        async def released() -> bool:
            t = await task_of(client, "held")
            node = (await client.get("/v1/nodes/n-1")).json()
            return bool(t["status"] == "pending" and node["status"] == "offline")

        await eventually(released, what="the node went offline and its task was released")
        events = await events_of(runtime)
        node_events = Counter(e.envelope.type for e in events if e.envelope.stream == "node:n-1")
        assert node_events["node.heartbeat_recorded"] <= 2, node_events
        assert node_events["node.went_offline"] == 1
        reasons = [body(e)["reason"] for e in events if e.envelope.type == "task.attempt_failed"]
        assert reasons == ["node_offline"]
        stale = await command(client, "task.start", "task:held", {"token": claim["token"]})
        assert stale.json()["code"] == "lease_lost"
        back = await client.post("/v1/nodes/n-1/heartbeat", json={})
        assert back.json()["recorded"] is True
        await eventually(lambda: _node_status(client, "n-1", "online"), what="a heartbeat brings it back")


async def _node_status(client: httpx.AsyncClient, node: str, status: str) -> bool:
    return bool((await client.get(f"/v1/nodes/{node}")).json()["status"] == status)


async def test_system_commands_need_a_sys_key(settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_keys": __import__("pydantic").SecretStr("w=worker:rw,s=pm:sys")})
    async with running(keyed) as (client, _):
        body = {"type": "clock.tick", "stream": "clock:main", "payload": {"at": "2020-01-01T00:00:00Z"}}
        refused = await client.post("/v1/commands", json=body, headers={"Authorization": "Bearer w"})
        assert refused.status_code == 403 and refused.json()["code"] == "insufficient_scope"
        allowed = await client.post("/v1/commands", json=body, headers={"Authorization": "Bearer s"})
        assert allowed.status_code == 200


# ── statistics ──────────────────────────────────────────────────────────────────────────


async def test_lists_and_statistics_by_status_node_user_type_and_parent(settings: Settings) -> None:
    async with running(settings) as (client, _):
        await command(client, "node.register", "node:n-1", {"hostname": "h", "capacity": 2})
        await command(client, "task.create", "task:p", {"name": "parent", "type": "render", "user": "ann"})
        await command(client, "task.create", "task:s-1", {"name": "sub", "type": "render", "parent": "p",
                                                          "user": "bob"})
        r = await command(client, "task.create", "task:s-2", {"name": "sub", "type": "grade", "parent": "p",
                                                              "priority": 9})
        claim = await client.post("/v1/nodes/n-1/claim", json={}, params={"consistent_with": r.json()["position"]})
        assert claim.json()["task_id"] == "s-2", "highest priority first"
        done = await command(client, "task.complete", "task:s-2", {"token": claim.json()["token"]})
        token = done.json()["position"]

        async def ids(**params: str) -> list[str]:
            page = await client.get("/v1/tasks", params={**params, "consistent_with": token})
            return [t["id"] for t in page.json()["items"]]

        assert await ids(parent="p") == ["s-1", "s-2"]
        assert await ids(user="bob") == ["s-1"]
        assert await ids(type="render") == ["p", "s-1"]
        assert await ids(status="succeeded") == ["s-2"]
        stats = (await client.get("/v1/task-stats", params={"window_seconds": 60, "consistent_with": token})).json()
        assert stats["by_status"] == {"pending": 2, "succeeded": 1} and stats["total"] == 3
        assert stats["by_type"]["render"] == {"pending": 2}
        assert stats["throughput"]["succeeded"] == 1
        node = (await client.get("/v1/nodes/n-1", params={"consistent_with": token})).json()
        assert (node["active"], node["available"]) == (0, 2)
        assert r.status_code == 200


# ── budget alerts and the saga ──────────────────────────────────────────────────────────


async def test_budget_alerts_are_raised_once_at_80_and_100_percent(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        await command(client, "project.create", "project:p-1", {"title": "t", "currency": "EUR",
                                                                 "budget_total": "100.00"})
        for amount in ("50.00", "35.00", "5.00", "10.00"):
            assert (await command(client, "project.add_cost", "project:p-1",
                                  {"amount": amount, "reason": "work"})).status_code == 200

        async def alerts() -> list[int]:
            return [body(e)["level"] for e in await events_of(runtime)
                    if e.envelope.type == "project.budget_alert_raised"]

        async def both() -> bool:
            return sorted(await alerts()) == [80, 100]

        await eventually(both, what="alerts at 80 and 100")
        assert sorted(await alerts()) == [80, 100], "each level once"


async def start_saga(client: httpx.AsyncClient, saga: str, amount: str, skills: tuple[str, ...] = (),
                     **extra: Any) -> httpx.Response:
    return await command(client, "saga.start_artifact", f"saga:{saga}", {
        "project_id": "p-1", "amount": amount,
        "task": {"name": f"render {saga}", "max_attempts": 1, "required_skills": list(skills)},
        "artifact": {"artifact_id": f"a-{saga}", "kind": "video", "uri": f"s3://bucket/{saga}.mp4"}, **extra})


async def test_the_artifact_saga_commits_on_success_and_releases_on_failure_timeout_and_refusal(
        settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        await command(client, "project.create", "project:p-1", {"title": "t", "currency": "EUR",
                                                                 "budget_total": "100.00"})
        await command(client, "node.register", "node:n-1", {"hostname": "h"})
        # No node offers "nobody": the late saga's task is never claimed, and its saga times out.
        for saga, amount, skills, extra in (("ok", "10.00", (), {}), ("bad", "20.00", (), {}),
                                            ("late", "5.00", ("nobody",), {"timeout_seconds": 1}),
                                            ("greedy", "500.00", (), {})):
            assert (await start_saga(client, saga, amount, skills, **extra)).status_code == 200

        async def saga_status(saga: str) -> str:
            r = await client.get(f"/v1/sagas/{saga}")
            return str(r.json()["status"]) if r.status_code == 200 else "missing"

        await eventually(lambda: _claimable(client, {"saga-ok", "saga-bad"}), what="the saga tasks exist")
        for _ in range(2):
            claim = (await client.post("/v1/nodes/n-1/claim", json={})).json()
            stream, token = f"task:{claim['task_id']}", claim["token"]
            if claim["task_id"] == "saga-ok":
                await command(client, "task.complete", stream, {"token": token})
            else:
                await command(client, "task.fail", stream, {"token": token, "error": "render crashed"})

        async def all_ended() -> bool:
            return [await saga_status(s) for s in ("ok", "bad", "late", "greedy")] == [
                "completed", "compensated", "compensated", "failed"]

        await eventually(all_ended, timeout=30, what="every saga ended")
        budget = (await client.get("/v1/projects/p-1/budget")).json()
        assert (Decimal(budget["spent"]), Decimal(budget["reserved"])) == (Decimal(10), Decimal(0))
        history = (await client.get("/v1/streams/saga:ok/history")).json()["items"]
        steps = [h["payload"].get("step") or h["type"] for h in history]
        assert steps == ["saga.started", "budget_reserved", "task_succeeded", "artifact_registered", "saga.finished"]
        events = await events_of(runtime)
    finished = Counter(e.envelope.stream for e in events if e.envelope.type == "saga.finished")
    assert set(finished.values()) == {1}


async def _claimable(client: httpx.AsyncClient, ids: set[str]) -> bool:
    page = await client.get("/v1/tasks", params={"status": "pending"})
    return ids <= {t["id"] for t in page.json()["items"]}


# ── restart of the process managers ─────────────────────────────────────────────────────


async def test_restarting_the_process_managers_mid_stream_duplicates_no_effect(settings: Settings) -> None:
    tasks = dag(60, seed=11)
    async with running(settings) as (client, runtime):
        await command(client, "project.create", "project:p-1", {"title": "t", "currency": "EUR",
                                                                 "budget_total": "10.00"})
        assert (await graph(client, tasks)).status_code == 200
        workers = workers_for(client, 3, [[]])
        stop = asyncio.Event()
        runs = [asyncio.create_task(w.run(stop=stop)) for w in workers]
        try:
            for round_ in range(3):
                await eventually(functools.partial(_completed, workers, 15 * (round_ + 1)), timeout=60, what="progress")
                await command(client, "project.add_cost", "project:p-1", {"amount": "3.00", "reason": "r"})
                await _restart_processes(runtime)
            await eventually(lambda: _completed(workers, 60), timeout=120, what="the DAG completed")
        finally:
            stop.set()
            await asyncio.gather(*runs)
        events = await events_of(runtime)
    per_stream: dict[str, Counter[str]] = defaultdict(Counter)
    for e in events:
        per_stream[e.envelope.stream][e.envelope.type] += 1
    assert all(c["task.unblocked"] <= 1 and c["task.succeeded"] == 1 for s, c in per_stream.items()
               if s.startswith("task:"))
    assert per_stream["project:p-1"]["project.budget_alert_raised"] == 1, "80% raised once across restarts"


async def _restart_processes(runtime: Runtime) -> None:
    old = next(t for t in runtime.tasks if t.get_name() == "processes")
    assert runtime.processes is not None
    await runtime.processes.stop()
    await asyncio.wait_for(old, 10)
    runtime.tasks.remove(old)
    runtime.processes = runtime._process_runtime()
    runtime.tasks.append(asyncio.create_task(runtime.processes.run(), name="processes"))


