"""A project's state and its fold: what ``project:<id>`` holds once its events are applied.

``evolve`` is total and trusting: it never refuses an event (every check lives in the decisions).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from blackboard.schemas.merge_patch import merge_patch
from blackboard.schemas.project import (
    ArtifactRegistered,
    BudgetAlertRaised,
    BudgetReserved,
    BudgetTotalSet,
    CostAdded,
    CostRefunded,
    DnaEntryPut,
    DnaEntryRemoved,
    ProjectCreated,
    ProjectEvent,
    ProjectStatusChanged,
    ReservationCommitted,
    ReservationReleased,
    ShotCreated,
    ShotUpdated,
    SpecPatched,
)

ZERO = Decimal(0)

# ── state ──────────────────────────────────────────────────────────────────────────────


class Budget(msgspec.Struct, frozen=True):
    """Money of the project: ``remaining`` = total - spent - reserved, never below zero."""

    total: Decimal
    spent: Decimal = ZERO
    reserved: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return self.total - self.spent - self.reserved


class Spec(msgspec.Struct, frozen=True):
    """The global spec document and its own version (1 at creation)."""

    doc: dict[str, Any]
    version: int = 1


class Reservation(msgspec.Struct, frozen=True):
    amount: Decimal
    reason: str
    expires_at: datetime
    by: str = ""


class DnaEntry(msgspec.Struct, frozen=True):
    """A DNA bank entry; a removed one stays as ``value`` None so that its version goes on growing."""

    value: dict[str, Any] | None
    version: int
    by: str = ""


class Setter(msgspec.Struct, frozen=True):
    """Who last set a shot field, and the shot version that did."""

    by: str
    version: int


class Shot(msgspec.Struct, frozen=True):
    """A shot's merged fields, its version (1 when created) and who set each top-level field last."""

    fields: dict[str, Any]
    version: int
    setters: dict[str, Setter] = {}


class Artifact(msgspec.Struct, frozen=True):
    kind: str
    uri: str
    params: dict[str, Any] = {}
    cost: Decimal | None = None
    shot_id: str | None = None
    task_id: str | None = None
    reservation_id: str | None = None
    by: str = ""


class Project(msgspec.Struct, frozen=True):
    """A project as its decisions need it; ``msgspec.to_builtins`` of it is its full document."""

    title: str
    status: str
    currency: str
    budget: Budget
    spec: Spec
    reservations: dict[str, Reservation] = {}
    dna: dict[str, DnaEntry] = {}
    shots: dict[str, Shot] = {}
    artifacts: dict[str, Artifact] = {}
    #: Budget alerts raised: level ("80", "100") → the budget total it was raised at.
    alerts: dict[str, Decimal] = {}


# ── fold ───────────────────────────────────────────────────────────────────────────────

#: The stream does not exist yet.
initial_state: Project | None = None


def evolve(state: Project | None, event: ProjectEvent) -> Project | None:
    """The state after ``event``. Total and trusting: an appended event happened."""
    if isinstance(event, ProjectCreated):
        return Project(event.title, event.status, event.currency, Budget(event.budget_total),
                       Spec(dict(event.global_spec)))
    if state is None:
        return None
    handler = _EVOLVE.get(type(event))
    return handler(state, event) if handler is not None else state


def _replace(state: Project, **changes: Any) -> Project:
    return msgspec.structs.replace(state, **changes)


def _money(state: Project, **changes: Decimal) -> Budget:
    return msgspec.structs.replace(state.budget, **changes)


def _status_changed(s: Project, e: ProjectStatusChanged) -> Project:
    return _replace(s, status=e.to_status)


def _spec_patched(s: Project, e: SpecPatched) -> Project:
    return _replace(s, spec=Spec(merge_patch(s.spec.doc, e.patch), e.spec_version))


def _total_set(s: Project, e: BudgetTotalSet) -> Project:
    return _replace(s, budget=_money(s, total=e.total))


def _cost_added(s: Project, e: CostAdded) -> Project:
    return _replace(s, budget=_money(s, spent=s.budget.spent + e.amount))


def _cost_refunded(s: Project, e: CostRefunded) -> Project:
    return _replace(s, budget=_money(s, spent=s.budget.spent - e.amount))


def _reserved(s: Project, e: BudgetReserved) -> Project:
    reservation = Reservation(e.amount, e.reason, e.expires_at, e.by)
    return _replace(s, budget=_money(s, reserved=s.budget.reserved + e.amount),
                    reservations={**s.reservations, e.reservation_id: reservation})


def _committed(s: Project, e: ReservationCommitted) -> Project:
    held = s.reservations.get(e.reservation_id)
    rest = {k: v for k, v in s.reservations.items() if k != e.reservation_id}
    freed = held.amount if held else e.amount + e.released
    return _replace(s, budget=_money(s, spent=s.budget.spent + e.amount, reserved=s.budget.reserved - freed),
                    reservations=rest)


def _released(s: Project, e: ReservationReleased) -> Project:
    held = s.reservations.get(e.reservation_id)
    rest = {k: v for k, v in s.reservations.items() if k != e.reservation_id}
    freed = held.amount if held else e.amount
    return _replace(s, budget=_money(s, reserved=s.budget.reserved - freed), reservations=rest)


def _dna_put(s: Project, e: DnaEntryPut) -> Project:
    return _replace(s, dna={**s.dna, e.key: DnaEntry(dict(e.value), e.entry_version, e.by)})


def _dna_removed(s: Project, e: DnaEntryRemoved) -> Project:
    return _replace(s, dna={**s.dna, e.key: DnaEntry(None, e.entry_version, e.by)})


def _shot_created(s: Project, e: ShotCreated) -> Project:
    setters = {name: Setter(e.by, 1) for name in e.fields}
    return _replace(s, shots={**s.shots, e.shot_id: Shot(merge_patch({}, e.fields), 1, setters)})


def _shot_updated(s: Project, e: ShotUpdated) -> Project:
    old = s.shots.get(e.shot_id)
    setters = {**(old.setters if old else {}), **{name: Setter(e.by, e.shot_version) for name in e.patch}}
    shot = Shot(merge_patch(old.fields if old else {}, e.patch), e.shot_version, setters)
    return _replace(s, shots={**s.shots, e.shot_id: shot})


def _artifact_registered(s: Project, e: ArtifactRegistered) -> Project:
    artifact = Artifact(e.kind, e.uri, dict(e.params), e.cost, e.shot_id, e.task_id, e.reservation_id, e.by)
    return _replace(s, artifacts={**s.artifacts, e.artifact_id: artifact})


_EVOLVE: dict[type[Any], Callable[[Project, Any], Project]] = {
    ProjectStatusChanged: _status_changed, SpecPatched: _spec_patched, BudgetTotalSet: _total_set,
    CostAdded: _cost_added, CostRefunded: _cost_refunded, BudgetReserved: _reserved, ReservationCommitted: _committed,
    ReservationReleased: _released, DnaEntryPut: _dna_put, DnaEntryRemoved: _dna_removed,
    ShotCreated: _shot_created, ShotUpdated: _shot_updated, ArtifactRegistered: _artifact_registered,
    BudgetAlertRaised: lambda s, e: _replace(s, alerts={**s.alerts, str(e.level): e.total}),
}


