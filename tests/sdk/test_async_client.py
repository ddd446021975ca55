"""``AsyncClient`` end to end against a real server: commands of every family, every read, rejections as
typed exceptions, read-your-writes, leases, checkpoints and the change push."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest
from blackboard_client import Accepted, ApiError, AsyncClient, DryRun, Rejected
from blackboard_client.commands import (
    AddCost,
    CreateDocument,
    CreateProject,
    CreateShot,
    CreateTask,
    PutDnaEntry,
    RegisterArtifact,
    RegisterNode,
    UpdateShot,
)

from blackboard.app import Runtime

Served = tuple[httpx.AsyncClient, Runtime, str]


async def _project(bb: AsyncClient, pid: str, total: str = "100.00") -> Accepted:
    made = await bb.send("project.create", f"project:{pid}",
                         CreateProject(title=pid, currency="EUR", budget_total=total, status="active"))
    assert isinstance(made, Accepted)
    return made


async def test_a_read_right_after_a_send_sees_it_without_a_token(served: Served) -> None:
    _, _, url = served
    async with AsyncClient(url) as bb:
        await _project(bb, "p-1")
        for i in range(20):
            await bb.send("project.add_cost", "project:p-1", AddCost(amount="1.00", reason=f"r{i}"))
            assert (await bb.budget("p-1"))["spent"] == f"{i + 1}.00"


async def test_projects_shots_dna_and_artifacts_round_trip(served: Served) -> None:
    _, _, url = served
    async with AsyncClient(url) as bb:
        made = await _project(bb, "p-2")
        assert (made.stream, made.version, made.events[0].type) == ("project:p-2", 1, "project.created")
        for s in ("a", "b", "c"):
            await bb.send("project.create_shot", "project:p-2", CreateShot(shot_id=s, fields={"scene": "1"}))
        shot_version = (await bb.shot("p-2", "b"))["version"]
        await bb.send("project.update_shot", "project:p-2",
                      UpdateShot(shot_id="b", patch={"status": "done"}, expected_version=shot_version))
        await bb.send("project.put_dna", "project:p-2", PutDnaEntry(key="hero", value={"hair": "red"},
                                                                    expected_version=0))
        await bb.send("project.register_artifact", "project:p-2",
                      RegisterArtifact(artifact_id="a1", kind="image", uri="s3://b/a1.png", shot_id="a"))
        assert (await bb.project("p-2"))["title"] == "p-2"
        assert [s["id"] async for s in bb.shots("p-2", page_size=1)] == ["a", "b", "c"]
        batch = await bb.get_shots("p-2", ["c", "zz", "b"])
        assert [s["id"] for s in batch.items] == ["c", "b"] and batch.missing == ["zz"]
        assert (await bb.shot("p-2", "b"))["status"] == "done"
        assert (await bb.dna("p-2"))["entries"]["hero"]["value"] == {"hair": "red"}
        assert "version" in await bb.spec("p-2")
        assert [a["artifact_id"] async for a in bb.artifacts("p-2")] == ["a1"]
        assert [p["id"] async for p in bb.projects(page_size=1) if p["id"] == "p-2"] == ["p-2"]
        history = [e async for e in bb.history("project:p-2", page_size=2)]
        assert [e["version"] for e in history] == list(range(1, 8))
        assert [e["version"] async for e in bb.shot_history("p-2", "b")] == [3, 5]
        assert [e["version"] async for e in bb.artifact_history("p-2", "a1")] == [7]
        assert (await bb.state("project:p-2", version=1))["version"] == 1
        assert (await bb.shot_state("p-2", "b", version=1))["id"] == "b"


async def test_rejections_are_typed_and_bad_fields_fail_before_the_network(served: Served) -> None:
    _, _, url = served
    async with AsyncClient(url) as bb:
        await _project(bb, "p-3", total="10.00")
        with pytest.raises(Rejected) as refused:
            await bb.send("project.add_cost", "project:p-3", AddCost(amount="11.00", reason="too much"),
                          command_id="over-1")
        assert refused.value.code == "budget_exceeded" and refused.value.command_id == "over-1"
        with pytest.raises(Rejected) as stale:
            await bb.send("project.add_cost", "project:p-3", AddCost(amount="1.00", reason="x"), expected_version=7)
        assert stale.value.code == "version_conflict"
        with pytest.raises(msgspec.ValidationError, match="amount"):
            await bb.send("project.add_cost", "project:p-3", {"amount": "-1", "reason": "x"})
        with pytest.raises(TypeError):
            await bb.send("project.set_status", "project:p-3", AddCost(amount="1", reason="x"))
        with pytest.raises(ApiError) as invalid:
            await bb.send("project.add_cost", "nocolon", AddCost(amount="1.00", reason="x"))
        assert (invalid.value.status, invalid.value.code) == (422, "invalid_command")
        dry = await bb.send("project.add_cost", "project:p-3", AddCost(amount="11.00", reason="x"), dry_run=True)
        assert isinstance(dry, DryRun) and dry.would == "rejected" and dry.code == "budget_exceeded"
        assert (await bb.outcome_of("over-1") or {})["code"] == "budget_exceeded"
        assert await bb.outcome_of("never-sent") is None


async def test_tasks_nodes_leases_documents_and_checkpoints(served: Served) -> None:
    _, _, url = served
    async with AsyncClient(url) as bb:
        await bb.send("task.create", "task:t-1", CreateTask(name="render", payload={"n": 1}, priority=5))
        await bb.send("node.register", "node:n-1", RegisterNode(hostname="h", skills=["gpu"]))
        assert (await bb.task("t-1"))["status"] == "pending"
        assert [t["id"] async for t in bb.tasks(status="pending")] == ["t-1"]
        assert [n["id"] for n in await bb.nodes()] == ["n-1"]
        assert (await bb.node("n-1"))["status"] == "online"
        claim = await bb.claim("n-1")
        assert claim is not None and claim.task_id == "t-1" and claim.token >= 1
        assert await bb.claim("n-1") is None
        assert (await bb.task_stats())["by_status"]
        with pytest.raises(ApiError) as missing:
            await bb.saga("no-such-saga")
        assert (missing.value.status, missing.value.code) == (404, "saga_not_found")

        async with bb.lease("gpu-0", "me", ttl=3) as lease:
            assert lease.token >= 1
            assert (await bb.lease_info("gpu-0"))["token"] == lease.token
            with pytest.raises(Rejected, match="lease_held"):
                await bb.send("lease.acquire", "lease:gpu-0", {"holder": "other", "ttl_seconds": 5})
            await asyncio.sleep(2.5)  # past a renewal, before the TTL
            lease.check()
        assert (await bb.lease_info("gpu-0"))["held"] is False

        review = CreateDocument(body={"status": "awaiting_review"}, links={"shot": "a"})
        await bb.send("doc.create", "doc:reviews.r1", review)
        assert (await bb.document("reviews", "r1"))["body"] == {"status": "awaiting_review"}
        assert [d["id"] async for d in bb.documents("reviews", where={"status": "awaiting_review"})] == ["r1"]

        saved = await bb.save_checkpoint("thread-1", b"state one", label="first")
        await bb.save_checkpoint("thread-1", b"state two")
        assert (await bb.checkpoint("thread-1")).data == b"state two"
        assert (await bb.checkpoint("thread-1", saved["seq"])).data == b"state one"
        restored = await bb.restore_checkpoint("thread-1", saved["seq"])
        assert (await bb.checkpoint("thread-1")).seq == restored["seq"]
        assert [c["seq"] async for c in bb.checkpoints("thread-1", page_size=1)] == [1, 2, 3]


async def test_watch_sees_each_new_entry_once(served: Served) -> None:
    _, _, url = served
    async with AsyncClient(url) as bb:
        await _project(bb, "p-4")
        seen: list[dict[str, Any]] = []

        async def follow() -> None:
            async for entry in bb.watch("project:p-4"):
                seen.append(entry)
                if len(seen) == 4:
                    return

        follower = asyncio.create_task(follow())
        for i in range(3):
            await bb.send("project.add_cost", "project:p-4", AddCost(amount="1.00", reason=f"w{i}"))
        await asyncio.wait_for(follower, 30)
        assert [e["version"] for e in seen] == [1, 2, 3, 4]
