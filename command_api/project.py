"""The project decider: stream ``project:<id>``; a budget that is never overspent, shots with versions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from blackboard.command_api.decider import Rejection
from blackboard.schemas.merge_patch import merge_patch
from blackboard.schemas.project import (
    AddCost,
    CostAdded,
    CreateProject,
    ProjectCommand,
    ProjectCreated,
    ProjectEvent,
    ShotUpdated,
    UpdateShot,
)

CATEGORY = "project"

# ── state ──────────────────────────────────────────────────────────────────────────────


class Shot(msgspec.Struct, frozen=True):
    fields: dict[str, Any]
    version: int


class Project(msgspec.Struct, frozen=True):
    title: str
    currency: str
    budget_total: Decimal
    spent: Decimal
    global_spec: dict[str, Any]
    shots: dict[str, Shot]


#: The stream does not exist yet.
initial_state: Project | None = None

# ── fold ───────────────────────────────────────────────────────────────────────────────


def evolve(state: Project | None, event: ProjectEvent) -> Project | None:
    """The state after ``event``. Total and trusting: an appended event happened."""
    match event:
        case ProjectCreated(title, currency, total, spec):
            return Project(title, currency, total, Decimal(0), dict(spec), {})
        case CostAdded(amount=amount) if state is not None:
            return msgspec.structs.replace(state, spent=state.spent + amount)
        case ShotUpdated(shot_id, patch, version) if state is not None:
            old = state.shots.get(shot_id)
            shot = Shot(merge_patch(old.fields if old else {}, patch), version)
            return msgspec.structs.replace(state, shots={**state.shots, shot_id: shot})
    return state


# ── decisions ──────────────────────────────────────────────────────────────────────────


def decide(state: Project | None, command: ProjectCommand) -> list[ProjectEvent] | Rejection:
    """The events ``command`` causes in ``state``, or the rule that refuses it."""
    if isinstance(command, CreateProject):
        return _create(state, command)
    if state is None:
        return Rejection("not_found", "the project does not exist; create it first")
    if isinstance(command, AddCost):
        return _add_cost(state, command)
    return _update_shot(state, command)


def _create(state: Project | None, c: CreateProject) -> list[ProjectEvent] | Rejection:
    event = ProjectCreated(c.title, c.currency, Decimal(c.budget_total), dict(c.global_spec))
    if state is None:
        return [event]
    if evolve(None, event) == msgspec.structs.replace(state, spent=Decimal(0), shots={}):
        return []  # the same creation again: nothing new happened
    return Rejection("already_exists", "a project with this id already exists with other values")


def _add_cost(state: Project, c: AddCost) -> list[ProjectEvent] | Rejection:
    amount = Decimal(c.amount)
    remaining = state.budget_total - state.spent
    if amount > remaining:
        return Rejection(
            "budget_exceeded",
            f"spent {state.spent} + {amount} would exceed the total {state.budget_total} {state.currency}",
            {"spent": str(state.spent), "amount": str(amount), "total": str(state.budget_total),
             "remaining": str(remaining)},
        )
    return [CostAdded(amount, c.reason, c.artifact_id)]


def _update_shot(state: Project, c: UpdateShot) -> list[ProjectEvent] | Rejection:
    shot = state.shots.get(c.shot_id)
    actual = shot.version if shot else 0
    if c.expected_version != actual:
        return Rejection(
            "version_conflict",
            f"shot {c.shot_id!r} is at version {actual}, the command expected {c.expected_version}",
            {"shot_id": c.shot_id, "expected_version": c.expected_version, "actual_version": actual},
        )
    return [ShotUpdated(c.shot_id, dict(c.patch), actual + 1)]
