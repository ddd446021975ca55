"""Every command type, built with the client's typed builder and sent as a dry run: the server decodes each
payload (no 4xx) and decides it. A builder that drifted from the server's schema fails here on the wire."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import msgspec
import pytest
from blackboard_client import AsyncClient, Client, DryRun
from blackboard_client import commands as c
from pydantic import SecretStr

from blackboard.config import Settings
from tests.integration.harness import serving

NOW = datetime.now(UTC)
DATA = b"checkpoint bytes"
PACKED = zlib.compress(DATA)

#: One (stream, payload) per command type.
EXAMPLES: dict[str, tuple[str, msgspec.Struct]] = {
    "project.create": ("project:e-1", c.CreateProject(title="t", currency="EUR", budget_total="10.00")),
    "project.add_cost": ("project:e-1", c.AddCost(amount="1.00", reason="r")),
    "project.update_shot": ("project:e-1", c.UpdateShot(shot_id="s", patch={"a": 1}, expected_version=1)),
    "project.set_status": ("project:e-1", c.SetProjectStatus(status="active")),
    "project.patch_spec": ("project:e-1", c.PatchSpec(patch={"fps": 24}, expected_version=1)),
    "project.set_budget_total": ("project:e-1", c.SetBudgetTotal(total="20.00")),
    "project.reserve_budget": ("project:e-1", c.ReserveBudget(reservation_id="r1", amount="1.00", reason="r")),
    "project.commit_reservation": ("project:e-1", c.CommitReservation(reservation_id="r1")),
    "project.release_reservation": ("project:e-1", c.ReleaseReservation(reservation_id="r1")),
    "project.expire_reservations": ("project:e-1", c.ExpireReservations()),
    "project.put_dna": ("project:e-1", c.PutDnaEntry(key="k", value={"v": 1}, expected_version=0)),
    "project.remove_dna": ("project:e-1", c.RemoveDnaEntry(key="k", expected_version=1)),
    "project.create_shot": ("project:e-1", c.CreateShot(shot_id="s")),
    "project.refund_cost": ("project:e-1", c.RefundCost(amount="1.00", reason="charged in error")),
    "project.register_artifact": ("project:e-1", c.RegisterArtifact(artifact_id="a", kind="img", uri="s3://b/a")),
    "project.raise_budget_alert": ("project:e-1", c.RaiseBudgetAlert(level=80)),
    "lease.acquire": ("lease:e-1", c.AcquireLease(holder="h")),
    "lease.renew": ("lease:e-1", c.RenewLease(holder="h", token=1)),
    "lease.release": ("lease:e-1", c.ReleaseLease(holder="h", token=1)),
    "task.create": ("task:e-1", c.CreateTask(name="n", required_skills=["gpu"])),
    "task.set_status": ("task:e-1", c.SetTaskStatus(status="cancelled")),
    "task.override_status": ("task:e-1", c.OverrideTaskStatus(status="pending", reason="stuck on a bad GPU")),
    "task.claim": ("task:e-1", c.ClaimTask(node="n-1")),
    "task.start": ("task:e-1", c.StartTask(token=1)),
    "task.progress": ("task:e-1", c.ReportProgress(token=1, percent=50.0)),
    "task.complete": ("task:e-1", c.CompleteTask(token=1, result={"ok": True})),
    "task.fail": ("task:e-1", c.FailTask(token=1, error="boom")),
    "task.cancel": ("task:e-1", c.CancelTask()),
    "task.retry": ("task:e-1", c.RetryTask()),
    "task.expire_claim": ("task:e-1", c.ExpireClaim(token=1, at=NOW)),
    "task.release_claim": ("task:e-1", c.ReleaseClaim(token=1, reason="node_offline")),
    "task.unblock": ("task:e-1", c.UnblockTask()),
    "task.fail_dependency": ("task:e-1", c.FailDependency(dependency="t-0", dependency_status="failed")),
    "node.register": ("node:e-1", c.RegisterNode(hostname="h", skills=["gpu"])),
    "node.heartbeat": ("node:e-1", c.Heartbeat()),
    "node.deregister": ("node:e-1", c.DeregisterNode()),
    "node.expire": ("node:e-1", c.ExpireNode(at=NOW)),
    "clock.tick": ("clock:e-1", c.Tick(at=NOW)),
    "saga.start_artifact": ("saga:e-1", c.StartArtifactSaga(
        project_id="e-1", amount="1.00", task=c.SagaTask(name="n"),
        artifact=c.SagaArtifact(artifact_id="a", kind="img", uri="s3://b/a"))),
    "saga.record_step": ("saga:e-1", c.RecordSagaStep(step="reserved")),
    "saga.finish": ("saga:e-1", c.FinishSaga(outcome="completed")),
    "doc.create": ("doc:notes.e-1", c.CreateDocument(body={"text": "hi"})),
    "doc.patch": ("doc:notes.e-1", c.PatchDocument(patch={"text": "ho"})),
    "doc.delete": ("doc:notes.e-1", c.DeleteDocument()),
    "checkpoint.save": ("checkpoint:e-1", c.SaveCheckpoint(
        sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA), encoding="zlib", stored_size=len(PACKED),
        inline=PACKED)),
    "checkpoint.restore": ("checkpoint:e-1", c.RestoreCheckpoint(seq=1)),
}


def test_there_is_an_example_of_every_command_type() -> None:
    assert sorted(EXAMPLES) == sorted(c.COMMANDS)


@pytest.fixture
async def system_url(settings: Settings) -> AsyncIterator[str]:
    keyed = settings.model_copy(update={"api_keys": SecretStr("s=pm:sys")})
    async with serving(keyed) as (_, _, url):
        yield url


async def test_every_command_type_built_by_the_client_is_decoded_and_decided_by_the_server(
        system_url: str) -> None:
    async with AsyncClient(system_url, api_key="s") as bb:
        for name, (stream, payload) in EXAMPLES.items():
            answer = await bb.send(name, stream, payload, dry_run=True)
            assert isinstance(answer, DryRun), name
            assert answer.would in ("accepted", "rejected"), (name, answer)
        made = await bb.send("project.create", "project:e-1", EXAMPLES["project.create"][1])
        assert not isinstance(made, DryRun)
        assert (await bb.project("e-1"))["title"] == "t"


def test_a_builder_refuses_a_bad_field_before_the_network() -> None:
    http = httpx.Client(transport=httpx.MockTransport(lambda r: pytest.fail("sent")), base_url="http://x")
    with Client("http://x", http=http) as bb, pytest.raises(msgspec.ValidationError, match="currency"):
        bb.send("project.create", "project:x", c.CreateProject(title="t", currency="euro", budget_total="1"))
