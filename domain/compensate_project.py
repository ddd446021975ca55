"""The project decider's compensation: the commands that take back what a run did to a project.

Fields are put back to their value before the run, each guarded so that the decider refuses it if
the field moved meanwhile: shot fields by ``preconditions`` on their current values, the spec and DNA
entries by their versions. Money is counted, not set: the run's spending is refunded
(``project.refund_cost``) and its reservations still held are released, whoever else spent since.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from blackboard.domain.project_state import Project
from blackboard.domain.rollback import ABSENT, Compensation, Proposal, Touch
from blackboard.schemas.changes import escape, unescape
from blackboard.schemas.project import (
    MAX_PRECONDITIONS,
    PROJECT_TRANSITIONS,
    ArtifactRegistered,
    BudgetReserved,
    CostAdded,
    CostRefunded,
    ReservationCommitted,
    ShotCreated,
)
from blackboard.schemas.runs import Unrestorable
from blackboard.schemas.views import FieldChange

REASON = "rollback of an agent run"


def unit_of(path: str) -> str | None:
    """Shot fields, spec keys and DNA entries one by one; the status and the budget total whole."""
    parts = path.split("/")[1:]
    if parts[:1] == ["status"] or parts[:2] == ["budget", "total"]:
        return "/" + "/".join(parts[:2])
    if len(parts) >= 3 and parts[:2] == ["spec", "doc"]:
        return "/" + "/".join(parts[:3])
    if len(parts) >= 2 and parts[0] == "dna":
        return "/" + "/".join(parts[:2])
    if len(parts) >= 4 and parts[0] == "shots" and parts[2] == "fields":
        return "/" + "/".join(parts[:4])
    return None


def restore_patch(current: Any, before: Any) -> Any:
    """The merge patch (RFC 7396) that turns ``current`` into ``before`` (``ABSENT``: remove it)."""
    if before is ABSENT:
        return None
    if isinstance(before, dict) and isinstance(current, dict):
        patch = {k: None for k in current if k not in before}
        patch.update({k: restore_patch(current.get(k, ABSENT), v) for k, v in before.items()
                      if current.get(k, ABSENT) != v})
        return patch
    return before


def _shown(value: Any) -> Any:
    return None if value is ABSENT else value


def change(path: str, current: Any, before: Any) -> FieldChange:
    if current is ABSENT:
        return FieldChange(path, "add", None, _shown(before))
    if before is ABSENT:
        return FieldChange(path, "remove", current, None)
    return FieldChange(path, "replace", current, before)


def money(amount: Decimal) -> str:
    return format(amount, "f")


def compensate(stream: str, now: Project | None, touches: Sequence[Touch], run_events: Sequence[Any],
               repeated: bool = False) -> Compensation:
    """The project's compensating commands, in a fixed order: money, fields, then status last.

    A ``repeated`` rollback counts no money again: its refund and releases were sent the first time.
    """
    if now is None:
        return Compensation([], [])
    by_kind: dict[str, list[Touch]] = {}
    for t in touches:
        by_kind.setdefault(t.unit.split("/")[1], []).append(t)
    proposals = [*([] if repeated else _money(now, run_events)), *_shots(by_kind.get("shots", [])),
                 *_dna(by_kind.get("dna", [])), *_spec(now, by_kind.get("spec", [])),
                 *_total(by_kind.get("budget", []))]
    unrestorable = _unrestorable(stream, run_events)
    status = by_kind.get("status", [])
    if status:
        moved = _status(stream, status[0])
        if isinstance(moved, Unrestorable):
            unrestorable.append(moved)
        else:
            proposals.append(moved)
    return Compensation(proposals, unrestorable)


def _money(now: Project, run_events: Sequence[Any]) -> list[Proposal]:
    spent = sum((e.amount for e in run_events if isinstance(e, CostAdded | ReservationCommitted)), Decimal(0))
    spent -= sum((e.amount for e in run_events if isinstance(e, CostRefunded)), Decimal(0))
    refund = min(spent, now.budget.spent)
    out: list[Proposal] = []
    if refund > 0:
        out.append(Proposal("refund", "project.refund_cost", {"amount": money(refund), "reason": REASON},
                            [FieldChange("/budget/spent", "replace", money(now.budget.spent),
                                         money(now.budget.spent - refund))]))
    reserved = sorted({e.reservation_id for e in run_events if isinstance(e, BudgetReserved)})
    for rid in reserved:
        held = now.reservations.get(rid)
        if held is not None:
            out.append(Proposal(f"release:{rid}", "project.release_reservation",
                                {"reservation_id": rid, "reason": REASON},
                                [FieldChange(f"/reservations/{escape(rid)}", "remove", money(held.amount), None)]))
    return out


def _shots(touches: Sequence[Touch]) -> list[Proposal]:
    by_shot: dict[str, list[Touch]] = {}
    for t in touches:
        by_shot.setdefault(unescape(t.unit.split("/")[2]), []).append(t)
    out: list[Proposal] = []
    for shot_id, fields in sorted(by_shot.items()):
        for start in range(0, len(fields), MAX_PRECONDITIONS):
            chunk = fields[start:start + MAX_PRECONDITIONS]
            names = [unescape(t.unit.split("/")[4]) for t in chunk]
            patch = {n: restore_patch(t.current, t.before) for n, t in zip(names, chunk, strict=True)}
            guard = {n: _shown(t.current) for n, t in zip(names, chunk, strict=True)}
            out.append(Proposal(f"shot:{shot_id}:{start}", "project.update_shot",
                                {"shot_id": shot_id, "patch": patch, "preconditions": guard},
                                [change(t.unit, t.current, t.before) for t in chunk]))
    return out


def _dna(touches: Sequence[Touch]) -> list[Proposal]:
    out: list[Proposal] = []
    for t in sorted(touches, key=lambda t: t.unit):
        key = unescape(t.unit.split("/")[2])
        version = t.current["version"] if isinstance(t.current, dict) else 0
        old = t.before.get("value") if isinstance(t.before, dict) else None
        new = t.current.get("value") if isinstance(t.current, dict) else None
        path = f"{t.unit}/value"
        if old is None and new is not None:
            out.append(Proposal(f"dna:{key}", "project.remove_dna", {"key": key, "expected_version": version},
                                [FieldChange(path, "remove", new, None)]))
        elif old is not None and old != new:
            out.append(Proposal(f"dna:{key}", "project.put_dna",
                                {"key": key, "value": old, "expected_version": version},
                                [FieldChange(path, "add" if new is None else "replace", new, old)]))
    return out


def _spec(now: Project, touches: Sequence[Touch]) -> list[Proposal]:
    if not touches:
        return []
    names = [unescape(t.unit.split("/")[3]) for t in touches]
    patch = {n: restore_patch(t.current, t.before) for n, t in zip(names, touches, strict=True)}
    return [Proposal("spec", "project.patch_spec", {"patch": patch, "expected_version": now.spec.version},
                     [change(t.unit, t.current, t.before) for t in touches])]


def _total(touches: Sequence[Touch]) -> list[Proposal]:
    return [Proposal("total", "project.set_budget_total", {"total": t.before},
                     [change(t.unit, t.current, t.before)]) for t in touches if t.before is not ABSENT]


def _status(stream: str, t: Touch) -> Proposal | Unrestorable:
    if t.before is ABSENT:
        return Unrestorable(stream, "/status", "the run created the project; no command removes a project")
    if t.before not in PROJECT_TRANSITIONS.get(t.current, frozenset()):
        return Unrestorable(stream, "/status", f"a project cannot move from {t.current} back to {t.before}")
    return Proposal("status", "project.set_status", {"status": t.before}, [change("/status", t.current, t.before)])


def _unrestorable(stream: str, run_events: Sequence[Any]) -> list[Unrestorable]:
    out: list[Unrestorable] = []
    for e in run_events:
        if isinstance(e, ShotCreated):
            out.append(Unrestorable(stream, f"/shots/{escape(e.shot_id)}",
                                    "the run created the shot; no command removes a shot (its fields are cleared)"))
        elif isinstance(e, ArtifactRegistered):
            out.append(Unrestorable(stream, f"/artifacts/{escape(e.artifact_id)}",
                                    "an artifact stays on record; its cost is refunded with the run's spending"))
    return out


class ProjectCompensator:
    """The project's ``Compensator``: this module's functions."""

    def unit_of(self, path: str) -> str | None:
        return unit_of(path)

    def compensate(self, stream: str, now: Any, touches: Sequence[Touch], run_events: Sequence[Any],
                   repeated: bool) -> Compensation:
        return compensate(stream, now, touches, run_events, repeated)
