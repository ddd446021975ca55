"""The project decider: stream ``project:<id>``; its rules here, the budget's among them; its state and
fold in ``project_state``.

One stream holds a project's status, global spec, budget with its reservations, DNA bank, shots
and artifacts, so that a command touching several of them (an artifact and the cost it charges)
is decided and appended all or nothing, and the budget is never overspent without any lock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import msgspec

from blackboard.domain.decider import Context, Rejection

# The decider is initial_state, decide and evolve: the state and its fold live in project_state, and are
# re-exported here (the "as" form) with the state's type.
from blackboard.domain.project_state import Artifact, Shot
from blackboard.domain.project_state import Project as Project
from blackboard.domain.project_state import evolve as evolve
from blackboard.domain.project_state import initial_state as initial_state
from blackboard.schemas.merge_patch import merge_patch
from blackboard.schemas.project import (
    PROJECT_TRANSITIONS,
    AddCost,
    ArtifactRegistered,
    BudgetAlertRaised,
    BudgetReserved,
    BudgetTotalSet,
    CommitReservation,
    CostAdded,
    CostRefunded,
    CreateProject,
    CreateShot,
    DnaEntryPut,
    DnaEntryRemoved,
    ExpireReservations,
    PatchSpec,
    ProjectCommand,
    ProjectCreated,
    ProjectEvent,
    ProjectStatusChanged,
    PutDnaEntry,
    RaiseBudgetAlert,
    RefundCost,
    RegisterArtifact,
    ReleaseReservation,
    RemoveDnaEntry,
    ReservationCommitted,
    ReservationReleased,
    ReserveBudget,
    SetBudgetTotal,
    SetProjectStatus,
    ShotCreated,
    ShotUpdated,
    SpecPatched,
    UpdateShot,
)

CATEGORY = "project"

# ── decisions ──────────────────────────────────────────────────────────────────────────

Decision = list[ProjectEvent] | Rejection

#: Commands whose decision depends on what the budget has left: expired reservations go first.
_BUDGET_COMMANDS = (SetBudgetTotal, AddCost, ReserveBudget, CommitReservation, ReleaseReservation,
                    ExpireReservations, RegisterArtifact)


def decide(state: Project | None, command: ProjectCommand, ctx: Context) -> Decision:
    """The events ``command`` causes in ``state`` at ``ctx.now``, or the rule that refuses it.

    Note: before a command that depends on the budget, every reservation past its expiry is
    released (``project.reservation_released``, ``why: expired``) in the same batch, so money
    held by work that never finished frees itself with no one having to call anything.
    """
    if isinstance(command, CreateProject):
        return _create(state, command)
    if not ctx.require("the project exists", state is not None):
        return Rejection("not_found", "the project does not exist; create it first with project.create")
    assert state is not None
    if not ctx.require("the project is not archived", state.status != "archived"):
        return Rejection("project_archived", "the project is archived: it takes no more commands")
    expired: list[ProjectEvent] = []
    if isinstance(command, _BUDGET_COMMANDS):
        expired = [ReservationReleased(rid, r.amount, "expired") for rid, r in sorted(state.reservations.items())
                   if r.expires_at <= ctx.now]
        for event in expired:
            state = evolve(state, event)
            assert state is not None
    result = _DECIDE[type(command)](state, command, ctx)
    if isinstance(result, Rejection):
        return result
    return [*expired, *result]


def _create(state: Project | None, c: CreateProject) -> Decision:
    event = ProjectCreated(c.title, c.currency, Decimal(c.budget_total), dict(c.global_spec), c.status)
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
        "budget_total": (state.budget.total, event.budget_total),
    }
    if state.spec.version == 1:
        # Python's == says {"a": True} == {"a": 1}; JSON does not.
        pairs["global_spec"] = (canonical(state.spec.doc), canonical(event.global_spec))
    return [name for name, (old, new) in pairs.items() if old != new]


def canonical(value: Any) -> bytes:
    """``value`` as JSON with sorted keys: equal bytes mean equal JSON values."""
    return msgspec.json.encode(value, order="sorted")


# ── the budget: money is never spent or held beyond the total ──────────────────────────


def money(amount: Decimal) -> str:
    """Fixed-point always: ``str()`` of a Decimal may choose exponent notation."""
    return format(amount, "f")


def _budget_details(state: Project, **extra: str) -> dict[str, str]:
    b = state.budget
    return {"total": money(b.total), "spent": money(b.spent), "reserved": money(b.reserved),
            "remaining": money(b.remaining), "currency": state.currency, **extra}


def _set_total(state: Project, c: SetBudgetTotal, ctx: Context) -> Decision:
    total, b = Decimal(c.total), state.budget
    if not ctx.require("total >= spent", total >= b.spent):
        return Rejection("budget_below_spent", f"the total {money(total)} is below what is already spent, "
                         f"{money(b.spent)} {state.currency}", _budget_details(state, asked=money(total)))
    if not ctx.require("total >= spent + reserved", total >= b.spent + b.reserved):
        return Rejection("budget_below_reserved", f"the total {money(total)} is below spent {money(b.spent)} plus "
                         f"reserved {money(b.reserved)} {state.currency}", _budget_details(state, asked=money(total)))
    if total == b.total:
        return []
    return [BudgetTotalSet(total, b.total)]


def _fits(state: Project, amount: Decimal, ctx: Context) -> Rejection | None:
    """``budget_exceeded`` when ``amount`` is more than what remains, else ``None``."""
    if ctx.require("amount <= remaining (total - spent - reserved)", amount <= state.budget.remaining):
        return None
    b = state.budget
    return Rejection(
        "budget_exceeded",
        f"{money(amount)} is more than what remains, {money(b.remaining)} {state.currency} "
        f"(total {money(b.total)}, spent {money(b.spent)}, reserved {money(b.reserved)})",
        _budget_details(state, amount=money(amount)),
    )


def _add_cost(state: Project, c: AddCost, ctx: Context) -> Decision:
    amount = Decimal(c.amount)
    refused = _fits(state, amount, ctx)
    return refused or [CostAdded(amount, c.reason, c.artifact_id)]


def _refund(state: Project, c: RefundCost, ctx: Context) -> Decision:
    amount = Decimal(c.amount)
    if not ctx.require("amount <= spent", amount <= state.budget.spent):
        return Rejection("refund_exceeds_spent", f"{money(amount)} is more than what is spent, "
                         f"{money(state.budget.spent)} {state.currency}", _budget_details(state, amount=money(amount)))
    return [CostRefunded(amount, c.reason)]


def _reserve(state: Project, c: ReserveBudget, ctx: Context) -> Decision:
    amount = Decimal(c.amount)
    known = state.reservations.get(c.reservation_id)
    if not ctx.require("reservation_id is not in use", known is None):
        assert known is not None
        return Rejection("reservation_exists", f"reservation {c.reservation_id!r} is already held",
                         {"reservation_id": c.reservation_id, "amount": money(known.amount),
                          "expires_at": known.expires_at.isoformat()})
    refused = _fits(state, amount, ctx)
    expires_at = ctx.now + timedelta(seconds=c.ttl_seconds)
    return refused or [BudgetReserved(c.reservation_id, amount, c.reason, expires_at, ctx.actor)]


def _held(state: Project, reservation_id: str, ctx: Context) -> Rejection | None:
    ok = ctx.require("the reservation is held (not committed, released or expired)",
                     reservation_id in state.reservations)
    if ok:
        return None
    return Rejection("reservation_not_found", f"no reservation {reservation_id!r} is held: it was never made, "
                     "or it was already committed, released or has expired", {"reservation_id": reservation_id})


def _commit(state: Project, c: CommitReservation, ctx: Context) -> Decision:
    refused = _held(state, c.reservation_id, ctx)
    if refused:
        return refused
    held = state.reservations[c.reservation_id]
    amount = held.amount if c.amount is None else Decimal(c.amount)
    if not ctx.require("amount <= the reserved amount", amount <= held.amount):
        return Rejection("reservation_exceeded", f"{money(amount)} is more than the {money(held.amount)} reserved",
                         {"reservation_id": c.reservation_id, "amount": money(amount), "reserved": money(held.amount)})
    reason = c.reason or held.reason
    return [ReservationCommitted(c.reservation_id, amount, held.amount - amount, reason, c.artifact_id)]


def _release(state: Project, c: ReleaseReservation, ctx: Context) -> Decision:
    refused = _held(state, c.reservation_id, ctx)
    if refused:
        return refused
    return [ReservationReleased(c.reservation_id, state.reservations[c.reservation_id].amount, "released", c.reason)]


def _expire(state: Project, c: ExpireReservations, ctx: Context) -> Decision:
    return []  # ``decide`` has already released every expired reservation


def _alert(state: Project, c: RaiseBudgetAlert, ctx: Context) -> Decision:
    """Raised once per level and total: a budget raised later can cross the level again."""
    budget = state.budget
    if state.alerts.get(str(c.level)) == budget.total:
        return []
    if not ctx.require(f"spending reached {c.level}% of the budget", budget.spent * 100 >= budget.total * c.level):
        return Rejection("below_alert_level", f"spent {budget.spent} is below {c.level}% of {budget.total}")
    return [BudgetAlertRaised(c.level, budget.spent, budget.total)]


# ── the other parts of a project ───────────────────────────────────────────────────────


def _set_status(state: Project, c: SetProjectStatus, ctx: Context) -> Decision:
    if c.status == state.status:
        return []  # already there: moving again changes nothing
    allowed = PROJECT_TRANSITIONS[state.status]
    if not ctx.require(f"status may move from {state.status} to {c.status}", c.status in allowed):
        return Rejection("illegal_transition", f"a project cannot move from {state.status} to {c.status}",
                         {"from": state.status, "to": c.status, "allowed": sorted(allowed)})
    return [ProjectStatusChanged(state.status, c.status)]


def _patch_spec(state: Project, c: PatchSpec, ctx: Context) -> Decision:
    actual = state.spec.version
    if not ctx.require("expected_version is the spec's version", c.expected_version == actual):
        return Rejection("version_conflict",
                         f"the global spec is at version {actual}, the command expected version {c.expected_version}",
                         {"part": "global_spec", "expected_version": c.expected_version, "actual_version": actual})
    return [SpecPatched(dict(c.patch), actual + 1)]


def _put_dna(state: Project, c: PutDnaEntry, ctx: Context) -> Decision:
    entry = state.dna.get(c.key)
    actual = entry.version if entry else 0
    if not ctx.require("expected_version is the entry's version", c.expected_version == actual):
        return _entry_conflict(c.key, c.expected_version, actual)
    return [DnaEntryPut(c.key, dict(c.value), actual + 1, ctx.actor)]


def _remove_dna(state: Project, c: RemoveDnaEntry, ctx: Context) -> Decision:
    entry = state.dna.get(c.key)
    if not ctx.require("the entry exists", entry is not None and entry.value is not None):
        return Rejection("dna_entry_not_found", f"the DNA bank has no entry {c.key!r}", {"key": c.key})
    assert entry is not None
    if not ctx.require("expected_version is the entry's version", c.expected_version == entry.version):
        return _entry_conflict(c.key, c.expected_version, entry.version)
    return [DnaEntryRemoved(c.key, entry.version + 1, ctx.actor)]


def _entry_conflict(key: str, expected: int, actual: int) -> Rejection:
    return Rejection("version_conflict", f"DNA entry {key!r} is at version {actual}, the command expected {expected}",
                     {"key": key, "expected_version": expected, "actual_version": actual})


def _create_shot(state: Project, c: CreateShot, ctx: Context) -> Decision:
    shot = state.shots.get(c.shot_id)
    if not ctx.require("the shot id is not taken", shot is None):
        assert shot is not None
        if canonical(shot.fields) == canonical(merge_patch({}, c.fields)) and shot.version == 1:
            return []  # the same creation again
        return Rejection("shot_exists", f"shot {c.shot_id!r} already exists at version {shot.version}",
                         {"shot_id": c.shot_id, "version": shot.version})
    return [ShotCreated(c.shot_id, dict(c.fields), ctx.actor)]


def _update_shot(state: Project, c: UpdateShot, ctx: Context) -> Decision:
    shot = state.shots.get(c.shot_id)
    actual = shot.version if shot else 0
    if c.expected_version is not None and not ctx.require(
            "expected_version is the shot's version", c.expected_version == actual):
        return Rejection(
            "version_conflict",
            f"shot {c.shot_id!r} is at version {actual}, the command expected version {c.expected_version}",
            {"shot_id": c.shot_id, "expected_version": c.expected_version, "actual_version": actual},
        )
    if c.preconditions is not None:
        if not ctx.require("the shot exists", shot is not None):
            return Rejection("shot_not_found", f"shot {c.shot_id!r} does not exist", {"shot_id": c.shot_id})
        assert shot is not None
        for name, expected in sorted(c.preconditions.items()):
            refused = _precondition(c.shot_id, shot, name, expected, ctx)
            if refused:
                return refused
    return [ShotUpdated(c.shot_id, dict(c.patch), actual + 1, ctx.actor)]


def _precondition(shot_id: str, shot: Shot, name: str, expected: Any, ctx: Context) -> Rejection | None:
    """``precondition_failed`` naming the field, its value and who set it, unless it still has ``expected``."""
    actual = shot.fields.get(name)
    if ctx.require(f"shot field {name!r} is {canonical(expected).decode()}", canonical(actual) == canonical(expected)):
        return None
    setter = shot.setters.get(name)
    by = f", set by {setter.by!r} at shot version {setter.version}" if setter else ""
    return Rejection(
        "precondition_failed",
        f"shot {shot_id!r} field {name!r} is {canonical(actual).decode()}, not {canonical(expected).decode()}{by}",
        {"shot_id": shot_id, "field": name, "expected": expected, "actual": actual,
         "set_by": setter.by if setter else None, "set_at_version": setter.version if setter else None,
         "shot_version": shot.version},
    )


def _register_artifact(state: Project, c: RegisterArtifact, ctx: Context) -> Decision:
    cost = None if c.cost is None else Decimal(c.cost)
    event = ArtifactRegistered(c.artifact_id, c.kind, c.uri, dict(c.params), cost, c.shot_id, c.task_id,
                               c.reservation_id, ctx.actor)
    known = state.artifacts.get(c.artifact_id)
    if not ctx.require("the artifact id is not taken", known is None):
        again = known == Artifact(event.kind, event.uri, event.params, cost, c.shot_id, c.task_id,
                                  c.reservation_id, known.by if known else "")
        if again:
            return []  # the same registration again
        return Rejection("artifact_exists", f"artifact {c.artifact_id!r} is already registered with other values",
                         {"artifact_id": c.artifact_id})
    if c.shot_id is not None and not ctx.require("the producing shot exists", c.shot_id in state.shots):
        return Rejection("shot_not_found", f"shot {c.shot_id!r} does not exist", {"shot_id": c.shot_id})
    if cost is None or cost == 0:
        return [event]
    if c.reservation_id is not None:
        charged = _commit(state, CommitReservation(c.reservation_id, c.cost, f"artifact {c.artifact_id}",
                                                   c.artifact_id), ctx)
    else:
        charged = _add_cost(state, AddCost(money(cost), f"artifact {c.artifact_id}", c.artifact_id), ctx)
    return charged if isinstance(charged, Rejection) else [event, *charged]


_DECIDE: dict[type[Any], Callable[[Project, Any, Context], Decision]] = {
    SetProjectStatus: _set_status, PatchSpec: _patch_spec, SetBudgetTotal: _set_total, AddCost: _add_cost,
    ReserveBudget: _reserve, CommitReservation: _commit, ReleaseReservation: _release,
    ExpireReservations: _expire, PutDnaEntry: _put_dna, RemoveDnaEntry: _remove_dna, CreateShot: _create_shot,
    UpdateShot: _update_shot, RegisterArtifact: _register_artifact, RaiseBudgetAlert: _alert,
    RefundCost: _refund,
}
