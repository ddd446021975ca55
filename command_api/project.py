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
    """A shot's merged fields and its version (1 after its first update)."""

    fields: dict[str, Any]
    version: int


class Project(msgspec.Struct, frozen=True):
    """A project as its decisions need it: the budget, the spec and every shot."""

    title: str
    currency: str
    budget_total: Decimal
    spent: Decimal
    global_spec: dict[str, Any]
    shots: dict[str, Shot]


# ── fold ───────────────────────────────────────────────────────────────────────────────

#: The stream does not exist yet.
initial_state: Project | None = None


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
        return Rejection("not_found", "the project does not exist; create it first with project.create")
    if isinstance(command, AddCost):
        return _add_cost(state, command)
    return _update_shot(state, command)


def _create(state: Project | None, c: CreateProject) -> list[ProjectEvent] | Rejection:
    event = ProjectCreated(c.title, c.currency, Decimal(c.budget_total), dict(c.global_spec))
    if state is None:
        return [event]
    differ = _differences(state, event)
    if not differ:
        return []  # the same creation again: nothing new happened
    return Rejection(
        "already_exists",
        f"the project already exists with other values for {', '.join(differ)}",
        {"fields": differ},
    )


def _differences(state: Project, event: ProjectCreated) -> list[str]:
    """The creation fields whose values differ; money compares as a number, the spec as canonical JSON."""
    pairs: dict[str, tuple[Any, Any]] = {
        "title": (state.title, event.title),
        "currency": (state.currency, event.currency),
        "budget_total": (state.budget_total, event.budget_total),
        # Python's == says {"a": True} == {"a": 1}; JSON does not.
        "global_spec": (_canonical(state.global_spec), _canonical(event.global_spec)),
    }
    return [name for name, (old, new) in pairs.items() if old != new]


def _canonical(value: Any) -> bytes:
    return msgspec.json.encode(value, order="sorted")


def _add_cost(state: Project, c: AddCost) -> list[ProjectEvent] | Rejection:
    amount = Decimal(c.amount)
    remaining = state.budget_total - state.spent
    if amount > remaining:
        return Rejection(
            "budget_exceeded",
            f"spent {_money(state.spent)} + {_money(amount)} would exceed the total "
            f"{_money(state.budget_total)} {state.currency}",
            {"spent": _money(state.spent), "amount": _money(amount), "total": _money(state.budget_total),
             "remaining": _money(remaining)},
        )
    return [CostAdded(amount, c.reason, c.artifact_id)]


def _money(amount: Decimal) -> str:
    # Fixed-point always: str() of a Decimal may choose exponent notation.
    return format(amount, "f")


def _update_shot(state: Project, c: UpdateShot) -> list[ProjectEvent] | Rejection:
    shot = state.shots.get(c.shot_id)
    actual = shot.version if shot else 0
    if c.expected_version != actual:
        return Rejection(
            "version_conflict",
            f"shot {c.shot_id!r} is at version {actual}, the command expected version {c.expected_version}",
            {"shot_id": c.shot_id, "expected_version": c.expected_version, "actual_version": actual},
        )
    return [ShotUpdated(c.shot_id, dict(c.patch), actual + 1)]
