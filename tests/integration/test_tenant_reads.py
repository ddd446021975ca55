"""Reads confined to the caller's tenant: documents, checkpoints, nodes, task statistics, sagas, runs, artifacts and
batch gets. Each tenant sees its own under its own ids, lists never show another's rows, and another tenant's id
answers exactly as an id nobody has (status and body, the request id aside)."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import msgspec
import pytest

from blackboard.config import Settings
from blackboard.query_api import cluster
from tests.integration.harness import running, settings_for
from tests.integration.test_grpc import Client, channel_to
from tests.integration.test_tenants import ACME, BETA, DEFAULT, KEYS, VOID

Who = dict[str, str]
#: An id no tenant has: what another tenant's id must answer like.
NOBODY = "nx-0"
OCTETS = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def tenant_settings(pg_url: str, topic_prefix: str) -> Settings:
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, api_keys=KEYS, grpc_port=0)


async def _ok(client: httpx.AsyncClient, who: Who, type_: str, stream: str, payload: dict[str, Any],
              **extra: Any) -> dict[str, Any]:
    sent = await client.post("/v1/commands", json={"type": type_, "stream": stream, "payload": payload, **extra},
                             headers=who)
    assert sent.status_code == 200 and sent.json()["outcome"] == "accepted", sent.text
    body: dict[str, Any] = sent.json()
    return body


async def _save(client: httpx.AsyncClient, who: Who, thread: str, data: bytes) -> str:
    saved = await client.put(f"/v1/checkpoints/{thread}", content=data, headers={**OCTETS, **who})
    assert saved.status_code == 200, saved.text
    position: str = saved.json()["position"]
    return position


def _after(*positions: str) -> dict[str, str]:
    """A consistency token past every one of ``positions`` (a token keeps each partition's highest offset)."""
    return {"Blackboard-Consistency": ",".join(positions)}


async def _get(client: httpx.AsyncClient, who: Who, path: str, **params: Any) -> Any:
    got = await client.get(path, headers=who, params=params)
    assert got.status_code == 200, got.text
    return got.json()


def _answer(response: httpx.Response, ident: str | None = None) -> tuple[int, Any]:
    """Status and body (the request id aside); ``NOBODY`` named as ``ident``."""
    text = response.text if ident is None else response.text.replace(NOBODY, ident)
    body = msgspec.json.decode(text) if text else None
    if isinstance(body, dict):
        body.pop("request_id", None)
    return response.status_code, body


async def _as_nowhere(client: httpx.AsyncClient, who: Who, path: str, ident: str, *, json: Any = None,
                      expect: int = 404) -> None:
    """``path`` (``{}`` for the id) of ``ident`` answers ``who`` exactly as of an id nobody has."""
    async def ask(name: str) -> httpx.Response:
        if json is None:
            return await client.get(path.format(name), headers=who)
        return await client.post(path.format(name), headers=who, json=json)

    theirs, nowhere = await ask(ident), await ask(NOBODY)
    assert theirs.status_code == expect, (path, ident, theirs.text)
    assert _answer(theirs) == _answer(nowhere, ident), (path, ident, theirs.text, nowhere.text)


def _ids(page: dict[str, Any], key: str = "id") -> list[str]:
    return sorted(item[key] for item in page["items"])


async def test_documents_and_checkpoints_are_each_tenants_own(tenant_settings: Settings) -> None:
    async with running(tenant_settings) as (client, _):
        positions = [
            (await _ok(client, ACME, "doc.create", "doc:notes.d-1", {"body": {"by": "acme"},
                                                                     "links": {"task_id": "t-1"}}))["position"],
            (await _ok(client, ACME, "doc.create", "doc:notes.d-2", {"body": {"by": "acme"}}))["position"],
            (await _ok(client, BETA, "doc.create", "doc:notes.d-1", {"body": {"by": "beta"},
                                                                     "links": {"task_id": "t-1"}}))["position"],
            (await _ok(client, ACME, "doc.patch", "doc:notes.d-2", {"patch": {"n": 2}}))["position"],
            await _save(client, ACME, "wf-1", b"acme one"),
            await _save(client, ACME, "wf-1", b"acme two"),
            await _save(client, ACME, "wf-2", b"acme other"),
            await _save(client, BETA, "wf-1", b"beta one"),
        ]
        # Every write is in the read models before anything is compared.
        assert (await client.get("/v1/tasks", headers={**_after(*positions), **VOID})).status_code == 200

        # Each tenant's own, under its own ids.
        notes = "/v1/collections/notes/documents"
        mine = await _get(client, ACME, f"{notes}/d-2")
        assert (mine["id"], mine["collection"], mine["body"], mine["version"]) == ("d-2", "notes",
                                                                                 {"by": "acme", "n": 2}, 2)
        assert (await _get(client, BETA, f"{notes}/d-1"))["body"] == {"by": "beta"}
        assert _ids(await _get(client, ACME, notes)) == ["d-1", "d-2"]
        assert _ids(await _get(client, BETA, notes)) == ["d-1"]
        assert _ids(await _get(client, ACME, notes, **{"link.task_id": "t-1"})) == ["d-1"]
        assert _ids(await _get(client, ACME, notes, where='{"by":"acme"}', limit=1, sort="-created_at")) == ["d-2"]
        history = await _get(client, ACME, "/v1/streams/doc:notes.d-2/history")
        assert [e["version"] for e in history["items"]] == [1, 2]
        listed = await client.get(notes, headers=ACME)
        assert "acme~" not in listed.text
        # Lists never show another tenant's rows.
        for who in (VOID, DEFAULT):
            assert (await _get(client, who, notes))["items"] == []
        assert (await _get(client, BETA, notes, where='{"by":"acme"}'))["items"] == []
        # Another tenant's document answers as one nobody has.
        for who in (BETA, VOID, DEFAULT):
            await _as_nowhere(client, who, notes + "/{}", "d-2")
            await _as_nowhere(client, who, "/v1/streams/doc:notes.{}/history", "d-2", expect=200)
        await _as_nowhere(client, VOID, notes + "/{}", "d-1")

        # Checkpoints: each tenant's thread wf-1 is its own.
        latest = await client.get("/v1/checkpoints/wf-1", headers=ACME)
        assert (latest.status_code, latest.content, latest.headers["x-checkpoint-seq"]) == (200, b"acme two", "2")
        assert (await client.get("/v1/checkpoints/wf-1/1", headers=ACME)).content == b"acme one"
        assert [e["seq"] for e in (await _get(client, ACME, "/v1/checkpoints/wf-1/history"))["items"]] == [1, 2]
        theirs = await client.get("/v1/checkpoints/wf-1", headers=BETA)
        assert (theirs.content, theirs.headers["x-checkpoint-seq"]) == (b"beta one", "1")
        assert [e["seq"] for e in (await _get(client, BETA, "/v1/checkpoints/wf-1/history"))["items"]] == [1]
        beyond = await client.get("/v1/checkpoints/wf-1/2", headers=BETA)
        assert (beyond.status_code, beyond.json()["code"]) == (404, "unknown_checkpoint")
        for who in (BETA, VOID, DEFAULT):
            for path in ("/v1/checkpoints/{}", "/v1/checkpoints/{}/1", "/v1/checkpoints/{}/history"):
                await _as_nowhere(client, who, path, "wf-2")


async def test_nodes_task_statistics_leases_and_sagas_are_each_tenants_own(tenant_settings: Settings) -> None:
    async with running(tenant_settings) as (client, runtime):
        positions = [
            (await _ok(client, ACME, "node.register", "node:n-1", {"hostname": "a1", "skills": ["gpu"]}))["position"],
            (await _ok(client, ACME, "node.register", "node:n-2", {"hostname": "a2"}))["position"],
            (await _ok(client, BETA, "node.register", "node:n-1", {"hostname": "b1"}))["position"],
            (await _ok(client, ACME, "task.create", "task:t-1", {"name": "render"}))["position"],
            (await _ok(client, BETA, "task.create", "task:t-1", {"name": "render"}))["position"],
            (await _ok(client, BETA, "task.create", "task:t-2", {"name": "review"}))["position"],
            (await _ok(client, DEFAULT, "task.create", "task:t-9", {"name": "render"}))["position"],
            (await _ok(client, ACME, "lease.acquire", "lease:gpu-0", {"holder": "a1", "ttl_seconds": 60}))["position"],
            (await _ok(client, ACME, "project.create", "project:p-1",
                       {"title": "t", "currency": "EUR", "budget_total": "10.00"}))["position"],
            (await _ok(client, ACME, "saga.start_artifact", "saga:s-1", {
                "project_id": "p-1", "amount": "1.00", "task": {"name": "render s-1", "required_skills": ["none"]},
                "artifact": {"artifact_id": "a-1", "kind": "video", "uri": "s3://bucket/a-1.mp4"}}))["position"],
        ]
        assert (await client.get("/v1/tasks", headers={**_after(*positions), **VOID})).status_code == 200

        # Nodes: each tenant's own, by its own ids.
        assert [(n["id"], n["hostname"]) for n in (await _get(client, ACME, "/v1/nodes"))["items"]] == [
            ("n-1", "a1"), ("n-2", "a2")]
        assert [(n["id"], n["hostname"]) for n in (await _get(client, BETA, "/v1/nodes"))["items"]] == [("n-1", "b1")]
        assert [n["id"] for n in (await _get(client, ACME, "/v1/nodes", skill="gpu"))["items"]] == ["n-1"]
        assert (await _get(client, BETA, "/v1/nodes", skill="gpu"))["items"] == []
        for who in (VOID, DEFAULT):
            assert (await _get(client, who, "/v1/nodes", status="online"))["items"] == []
        assert (await _get(client, BETA, "/v1/nodes/n-1"))["hostname"] == "b1"
        for who in (BETA, VOID, DEFAULT):
            await _as_nowhere(client, who, "/v1/nodes/{}", "n-2")

        # Task statistics count the caller's tasks only.
        beta = await _get(client, BETA, "/v1/task-stats")
        assert (beta["total"], beta["by_status"], beta["by_node"]) == (2, {"pending": 2}, {}), beta
        assert (await _get(client, DEFAULT, "/v1/task-stats"))["total"] == 1
        assert (await _get(client, VOID, "/v1/task-stats"))["total"] == 0
        assert (await _get(client, ACME, "/v1/task-stats"))["total"] >= 1

        # What a node of each tenant may claim.
        assert runtime.reads is not None
        pool = runtime.reads.pool
        assert sorted(i for i, _ in await cluster.claim_candidates(pool, [], 10, [], tenant="beta")) == [
            "beta~t-1", "beta~t-2"]
        assert [i for i, _ in await cluster.claim_candidates(pool, [], 10, [], tenant="default")] == ["t-9"]
        assert await cluster.claim_candidates(pool, [], 10, [], tenant="void") == []

        # A lease too.
        assert (await _get(client, ACME, "/v1/leases/gpu-0"))["holder"] == "a1"
        for who in (BETA, VOID, DEFAULT):
            await _as_nowhere(client, who, "/v1/leases/{}", "gpu-0")

        # A saga is its tenant's.
        saga = await _get(client, ACME, "/v1/sagas/s-1")
        assert (saga["id"], saga["project_id"]) == ("s-1", "p-1")
        for who in (BETA, VOID, DEFAULT):
            await _as_nowhere(client, who, "/v1/sagas/{}", "s-1")


async def test_runs_artifacts_and_batch_gets_are_each_tenants_own(tenant_settings: Settings) -> None:
    run = {"agent": {"run_id": "run-1", "model": "m"}}
    create = {"title": "t", "currency": "EUR", "budget_total": "10.00"}
    async with running(tenant_settings) as (client, runtime), channel_to(runtime.grpc_port) as channel:
        # The same run id, project, shot and artifact ids in two tenants; a project p-1 of the default tenant too.
        sent = [
            await _ok(client, ACME, "project.create", "project:p-1", create, **run),
            await _ok(client, ACME, "project.add_cost", "project:p-1", {"amount": "2.00", "reason": "x"}, **run),
            await _ok(client, ACME, "project.create_shot", "project:p-1", {"shot_id": "s-1", "fields": {}}),
            await _ok(client, ACME, "project.register_artifact", "project:p-1", {
                "artifact_id": "a-1", "kind": "video", "uri": "s3://b/a.mp4", "task_id": "t-1"}, **run),
            await _ok(client, BETA, "project.create", "project:p-1", create, **run),
            await _ok(client, BETA, "project.register_artifact", "project:p-1", {
                "artifact_id": "a-1", "kind": "video", "uri": "s3://b/b.mp4", "task_id": "t-2"}),
            await _ok(client, DEFAULT, "project.create", "project:p-1", create),
            await _ok(client, DEFAULT, "project.create_shot", "project:p-1", {"shot_id": "s-9", "fields": {}}),
        ]
        assert (await client.get("/v1/tasks", headers={**_after(*(s["position"] for s in sent)), **VOID})
                ).status_code == 200
        acme_events = sum(len(s["events"]) for s in sent[:4] if s is not sent[2])
        beta_events = len(sent[4]["events"])

        # Runs: two tenants, one run id, two runs.
        assert [(r["id"], r["events"]) for r in (await _get(client, ACME, "/v1/runs"))["items"]] == [
            ("run-1", acme_events)]
        assert [(r["id"], r["events"]) for r in (await _get(client, BETA, "/v1/runs"))["items"]] == [
            ("run-1", beta_events)]
        for who in (VOID, DEFAULT):
            assert (await _get(client, who, "/v1/runs"))["items"] == []
        summary = await _get(client, ACME, "/v1/runs/run-1")
        assert summary["events"] == acme_events and summary["streams"] == [
            {"stream": "project:p-1", "events": acme_events}]
        assert [(m["project_id"], m["spent"]) for m in summary["money"]] == [("p-1", "2.00")]
        assert (await _get(client, BETA, "/v1/runs/run-1"))["events"] == beta_events
        changes = await _get(client, ACME, "/v1/runs/run-1/changes")
        assert len(changes["items"]) == acme_events and "acme~" not in str(changes)
        assert len((await _get(client, BETA, "/v1/runs/run-1/changes"))["items"]) == beta_events
        assert (await _get(client, ACME, "/v1/runs/run-1/effects"))["run_id"] == "run-1"
        for who in (VOID, DEFAULT):
            for path in ("/v1/runs/{}", "/v1/runs/{}/changes", "/v1/runs/{}/effects"):
                await _as_nowhere(client, who, path, "run-1")

        # The artifacts' task filter names the caller's task.
        artifacts = "/v1/projects/p-1/artifacts"
        mine = await _get(client, ACME, artifacts, task_id="t-1")
        assert [(a["artifact_id"], a["task_id"], a["uri"]) for a in mine["items"]] == [("a-1", "t-1", "s3://b/a.mp4")]
        assert (await _get(client, ACME, artifacts, task_id="t-2"))["items"] == []
        assert [a["uri"] for a in (await _get(client, BETA, artifacts, task_id="t-2"))["items"]] == ["s3://b/b.mp4"]
        assert (await _get(client, BETA, artifacts, task_id="t-1"))["items"] == []

        # A batch get of shots reads the caller's project.
        batch = "/v1/projects/{}/shots/batch-get"
        got = await client.post(batch.format("p-1"), json={"ids": ["s-1", "s-9"]}, headers=ACME)
        assert ([s["id"] for s in got.json()["items"]], got.json()["missing"]) == (["s-1"], ["s-9"]), got.text
        got = await client.post(batch.format("p-1"), json={"ids": ["s-1", "s-9"]}, headers=DEFAULT)
        assert ([s["id"] for s in got.json()["items"]], got.json()["missing"]) == (["s-9"], ["s-1"]), got.text
        await _as_nowhere(client, VOID, batch, "p-1", json={"ids": ["s-1"]})

        # gRPC: the same confinement.
        acme, void = Client(channel, (("x-api-key", "k-acme"),)), Client(channel, (("x-api-key", "k-void"),))
        assert (await acme("GetRun", run_id="run-1")).events == acme_events
        assert len((await acme("GetRunChanges", run_id="run-1")).items) == acme_events
        for rpc in ("GetRun", "GetRunChanges", "GetRunEffects"):
            with pytest.raises(grpc.aio.AioRpcError) as theirs:
                await void(rpc, run_id="run-1")
            with pytest.raises(grpc.aio.AioRpcError) as nowhere:
                await void(rpc, run_id=NOBODY)
            assert theirs.value.code() == grpc.StatusCode.NOT_FOUND
            assert theirs.value.details() == (nowhere.value.details() or "").replace(NOBODY, "run-1")
