"""Every read model of the projection, declared: one ``StateTable`` per category folded with its decider's
``evolve`` (see ``projector.state_table``), and the tables of projects, shots and artifacts, which the fold
builds row by row and which are written with the named statements of ``projector/sql``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from blackboard.domain import clock, lease, node, saga, task
from blackboard.projector.checkpoint_table import CHECKPOINTS
from blackboard.projector.document_table import DOCUMENTS
from blackboard.projector.state_table import COMMON, StateTable
from blackboard.schemas import node as node_events
from blackboard.schemas import saga as saga_events
from blackboard.schemas import task as task_events

# ``COMMON`` and ``StateTable`` are the declarations' vocabulary, named here with them.
__all__ = ["ARTIFACTS", "COMMON", "PROJECTS", "SHOTS", "STATE_TABLES", "ColumnTable", "StateTable"]


def _task_columns(state: task.Task) -> dict[str, Any]:
    claim = state.claim
    return {
        "name": state.name, "priority": state.priority, "payload": state.payload or None, "status": state.status,
        "type": state.type, "user_id": state.user, "parent": state.parent,
        "required_skills": state.required_skills, "depends_on": state.depends_on,
        "node": claim.node if claim else None, "token": state.token,
        "lease_expires_at": claim.expires_at if claim else None, "attempts": state.attempts,
        "max_attempts": state.max_attempts, "not_before": state.not_before,
        "progress": state.progress, "finished_at": state.finished_at,
    }


def _legacy_task(row: dict[str, Any]) -> task.Task:
    """A task row of the first read model: name, priority, payload and status were all it had."""
    return task.Task(row["name"], row["priority"], row["payload"] or {}, row["status"])


def _node_columns(state: node.Node) -> dict[str, Any]:
    return {
        "hostname": state.hostname, "platform": state.platform, "skills": state.skills, "capacity": state.capacity,
        "status": state.status, "reported_status": state.reported_status, "load": state.load,
        "ttl_seconds": state.ttl_seconds, "last_seen": state.last_seen,
    }


def _saga_columns(state: saga.Saga) -> dict[str, Any]:
    return {"project_id": state.project_id, "status": state.status, "steps": state.steps, "reason": state.reason,
            "deadline": state.deadline}


def _lease_columns(state: lease.Lease) -> dict[str, Any]:
    return {"holder": state.holder, "token": state.token, "expires_at": state.expires_at}


def _clock_columns(state: clock.Clock) -> dict[str, Any]:
    return {"at": state.at}


STATE_TABLES: dict[str, StateTable] = {
    "task": StateTable("task", "tasks", "id", task.Task, task.evolve, task.initial_state, _task_columns,
                       opener=(task_events.TaskCreated,), legacy=_legacy_task),
    "node": StateTable("node", "nodes", "id", node.Node, node.evolve, node.initial_state, _node_columns,
                       opener=(node_events.NodeRegistered,)),
    "clock": StateTable("clock", "clocks", "id", clock.Clock, clock.evolve, clock.initial_state, _clock_columns,
                        opener=()),  # the clock stream opens with any tick
    "saga": StateTable("saga", "sagas", "id", saga.Saga, saga.evolve, saga.initial_state, _saga_columns,
                       opener=(saga_events.ArtifactSagaStarted,)),
    # Any grant opens a lease's stream, and its evolve is total: nothing refuses.
    "lease": StateTable("lease", "leases", "name", lease.Lease, lease.evolve, lease.initial_state, _lease_columns),
    "doc": DOCUMENTS,  # documents (reviews, corrections, evaluations, any collection)
    "checkpoint": CHECKPOINTS,  # checkpoints (large, compressed, claim-check)
}


@dataclass(frozen=True, slots=True)
class ColumnTable:
    """A read model the fold builds row by row: ``columns`` in the order of the ``write`` statement's arrays.

    ``write`` names the statement of ``projector/sql`` that takes one array per column (``unnest``).
    """

    table: str
    columns: tuple[str, ...]
    write: str


PROJECTS = ColumnTable("projects", (
    "id", "title", "currency", "budget_total", "spent", "global_spec", "version", "partition", "last_offset",
    "created_at", "updated_at", "state", "status", "reserved", "spec_version", "dna", "reservations"),
    "upsert_projects")
SHOTS = ColumnTable("shots", ("project_id", "shot_id", "fields", "version", "created_at", "updated_at"),
                    "upsert_shots")
ARTIFACTS = ColumnTable("artifacts", (
    "project_id", "artifact_id", "kind", "uri", "params", "cost", "shot_id", "task_id", "reservation_id",
    "created_by", "created_at", "version"), "insert_artifacts")
