"""Every command and event type by its wire name, with schema versions and upcasters.

Decoding goes through here so that a reader of the log gets today's Struct for any version
that was ever written, and a version it does not know is an error it can set aside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from blackboard.schemas import checkpoint, clock, document, lease, node, project, saga, task

#: Command wire names → (aggregate category, payload Struct).
COMMAND_TYPES: dict[str, tuple[str, type[msgspec.Struct]]] = {
    "project.create": ("project", project.CreateProject),
    "project.add_cost": ("project", project.AddCost),
    "project.refund_cost": ("project", project.RefundCost),
    "project.update_shot": ("project", project.UpdateShot),
    "project.set_status": ("project", project.SetProjectStatus),
    "project.patch_spec": ("project", project.PatchSpec),
    "project.set_budget_total": ("project", project.SetBudgetTotal),
    "project.reserve_budget": ("project", project.ReserveBudget),
    "project.commit_reservation": ("project", project.CommitReservation),
    "project.release_reservation": ("project", project.ReleaseReservation),
    "project.expire_reservations": ("project", project.ExpireReservations),
    "project.put_dna": ("project", project.PutDnaEntry),
    "project.remove_dna": ("project", project.RemoveDnaEntry),
    "project.create_shot": ("project", project.CreateShot),
    "project.register_artifact": ("project", project.RegisterArtifact),
    "project.raise_budget_alert": ("project", project.RaiseBudgetAlert),
    "lease.acquire": ("lease", lease.AcquireLease),
    "lease.renew": ("lease", lease.RenewLease),
    "lease.release": ("lease", lease.ReleaseLease),
    "task.create": ("task", task.CreateTask),
    "task.set_status": ("task", task.SetTaskStatus),
    "task.override_status": ("task", task.OverrideTaskStatus),
    "task.claim": ("task", task.ClaimTask),
    "task.start": ("task", task.StartTask),
    "task.progress": ("task", task.ReportProgress),
    "task.complete": ("task", task.CompleteTask),
    "task.fail": ("task", task.FailTask),
    "task.cancel": ("task", task.CancelTask),
    "task.retry": ("task", task.RetryTask),
    "task.expire_claim": ("task", task.ExpireClaim),
    "task.release_claim": ("task", task.ReleaseClaim),
    "task.unblock": ("task", task.UnblockTask),
    "task.fail_dependency": ("task", task.FailDependency),
    "node.register": ("node", node.RegisterNode),
    "node.heartbeat": ("node", node.Heartbeat),
    "node.deregister": ("node", node.DeregisterNode),
    "node.expire": ("node", node.ExpireNode),
    "clock.tick": ("clock", clock.Tick),
    "saga.start_artifact": ("saga", saga.StartArtifactSaga),
    "saga.record_step": ("saga", saga.RecordSagaStep),
    "saga.finish": ("saga", saga.FinishSaga),
    # documents (reviews, corrections, evaluations, any collection)
    "doc.create": ("doc", document.CreateDocument),
    "doc.patch": ("doc", document.PatchDocument),
    "doc.delete": ("doc", document.DeleteDocument),
    # checkpoints (large, compressed, claim-check)
    "checkpoint.save": ("checkpoint", checkpoint.SaveCheckpoint),
    "checkpoint.restore": ("checkpoint", checkpoint.RestoreCheckpoint),
}

#: Event wire names → (Struct, current schema version).
EVENT_TYPES: dict[str, tuple[type[msgspec.Struct], int]] = {
    "project.created": (project.ProjectCreated, 1),
    "project.cost_added": (project.CostAdded, 1),
    "project.cost_refunded": (project.CostRefunded, 1),
    "project.shot_updated": (project.ShotUpdated, 1),
    "project.status_changed": (project.ProjectStatusChanged, 1),
    "project.spec_patched": (project.SpecPatched, 1),
    "project.budget_total_set": (project.BudgetTotalSet, 1),
    "project.budget_reserved": (project.BudgetReserved, 1),
    "project.reservation_committed": (project.ReservationCommitted, 1),
    "project.reservation_released": (project.ReservationReleased, 1),
    "project.dna_put": (project.DnaEntryPut, 1),
    "project.dna_removed": (project.DnaEntryRemoved, 1),
    "project.shot_created": (project.ShotCreated, 1),
    "project.artifact_registered": (project.ArtifactRegistered, 1),
    "project.budget_alert_raised": (project.BudgetAlertRaised, 1),
    "lease.granted": (lease.LeaseGranted, 1),
    "lease.renewed": (lease.LeaseRenewed, 1),
    "lease.released": (lease.LeaseReleased, 1),
    "task.created": (task.TaskCreated, 2),
    "task.status_changed": (task.TaskStatusChanged, 1),
    "task.claimed": (task.TaskClaimed, 1),
    "task.started": (task.TaskStarted, 1),
    "task.progressed": (task.TaskProgressed, 1),
    "task.succeeded": (task.TaskSucceeded, 1),
    "task.attempt_failed": (task.AttemptFailed, 1),
    "task.cancelled": (task.TaskCancelled, 1),
    "task.retried": (task.TaskRetried, 1),
    "task.unblocked": (task.TaskUnblocked, 1),
    "task.dependency_failed": (task.DependencyFailed, 1),
    "node.registered": (node.NodeRegistered, 1),
    "node.heartbeat_recorded": (node.HeartbeatRecorded, 1),
    "node.came_online": (node.NodeCameOnline, 1),
    "node.went_offline": (node.NodeWentOffline, 1),
    "node.deregistered": (node.NodeDeregistered, 1),
    "clock.ticked": (clock.Ticked, 1),
    "saga.started": (saga.ArtifactSagaStarted, 1),
    "saga.step_recorded": (saga.SagaStepRecorded, 1),
    "saga.finished": (saga.SagaFinished, 1),
    # documents (reviews, corrections, evaluations, any collection)
    "doc.created": (document.DocumentCreated, 1),
    "doc.patched": (document.DocumentPatched, 1),
    "doc.deleted": (document.DocumentDeleted, 1),
    # checkpoints (large, compressed, claim-check)
    "checkpoint.saved": (checkpoint.CheckpointSaved, 1),
}

#: Commands only the process managers send: over HTTP they need an API key of mode ``sys``.
SYSTEM_COMMANDS: frozenset[str] = (task.SYSTEM_COMMANDS | node.SYSTEM_COMMANDS | clock.SYSTEM_COMMANDS
                                   | saga.SYSTEM_COMMANDS | {"project.raise_budget_alert"})

#: Commands whose no-op acceptances (accepted, nothing appended) are answered but not remembered.
#: Note: they are sent often and a no-op is harmless to decide again (a heartbeat that says nothing new,
#: a tick already passed); remembering each would grow the command-results topic and the owners'
#: memory by one entry per call. A refusal is always remembered, of these too: otherwise a retry with
#: the same ``command_id`` could be accepted later, one command with two outcomes.
VOLATILE_COMMANDS: frozenset[str] = frozenset({"node.heartbeat", "clock.tick"})

_NAME_OF: dict[type[msgspec.Struct], str] = {cls: name for name, (cls, _) in EVENT_TYPES.items()}

#: (type, from_version) → a pure function turning that version's JSON object into the next one's.
#: Bumping a version means one entry here per older version (``decode_event`` chains them).
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("task.created", 1): task.upcast_task_created_v1,
}


class UnknownEventType(ValueError):
    """The log holds an event type or schema version this build does not know."""


def event_name(event: msgspec.Struct) -> str:
    """The wire name of an event Struct (``CostAdded`` → ``project.cost_added``)."""
    return _NAME_OF[type(event)]


def schema_version_of(name: str) -> int:
    return EVENT_TYPES[name][1]


def encode_payload(event: msgspec.Struct) -> bytes:
    return msgspec.json.encode(event)


#: A JSON decoder per event Struct, made on first use: a rebuild decodes every event of the log.
_DECODERS: dict[type[msgspec.Struct], msgspec.json.Decoder[msgspec.Struct]] = {}


def decode_event(name: str, schema_version: int, payload: bytes) -> msgspec.Struct:
    """Decode an event payload of any known version into today's Struct.

    Raises ``UnknownEventType`` for an unknown name or a newer version than this build
    knows, and ``msgspec.DecodeError`` (or ``ValidationError``) for a malformed payload.
    """
    known = EVENT_TYPES.get(name)
    if known is None:
        raise UnknownEventType(f"unknown event type {name!r}")
    cls, current = known
    if schema_version > current or schema_version < 1:
        raise UnknownEventType(f"{name} schema_version {schema_version} is not in 1..{current}")
    if schema_version == current:
        decoder = _DECODERS.get(cls)
        if decoder is None:
            decoder = _DECODERS[cls] = msgspec.json.Decoder(cls)
        return decoder.decode(payload)
    obj: dict[str, Any] = msgspec.json.decode(payload, type=dict[str, Any])
    for version in range(schema_version, current):
        obj = UPCASTERS[(name, version)](obj)
    return msgspec.convert(obj, type=cls)
