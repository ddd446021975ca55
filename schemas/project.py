"""Project commands and events: the project and its status, the global spec, the budget with its
reservations and costs, the DNA bank, shots and artifacts. All live on the stream ``project:<id>``,
so one command may touch several of them atomically (an artifact and the cost it charges)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec

from blackboard.schemas.types import (
    Currency,
    ExpectedVersion,
    Identifier,
    MoneyText,
    PositiveMoneyText,
    ShortText,
)

#: Keys a shot document carries itself; a patch may not set them.
RESERVED_SHOT_FIELDS = frozenset({"id", "version"})

ProjectStatus = Literal["draft", "active", "paused", "completed", "archived"]

#: The moves a project's status may make; anything else is refused with ``illegal_transition``.
#: ``archived`` is final: an archived project refuses every command.
PROJECT_TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"active", "archived"}),
    "active": frozenset({"paused", "completed", "archived"}),
    "paused": frozenset({"active", "completed", "archived"}),
    "completed": frozenset({"archived"}),
    "archived": frozenset(),
}

#: How long a reservation or a lease may be asked for: from one second to one day.
TtlSeconds = Annotated[int, msgspec.Meta(ge=1, le=86_400, description="seconds, 1 to 86400")]
#: A version a command expects of something that must already exist.
ExistingVersion = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
#: An artifact's location: a URI of at most 2048 characters.
Uri = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*:\S+(?!\n)$",
                                  description="an absolute URI (scheme:...), at most 2048 characters")]
#: Fields one precondition may name.
MAX_PRECONDITIONS = 32


def _positive(amount: str | None) -> None:
    if amount is not None and Decimal(amount) == 0:
        raise ValueError("amount must be greater than 0")


# ── commands (imperative) ───────────────────────────────────────────────────────────────


class CreateProject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.create``: a project with a budget and a free-form global spec, ``draft`` unless told."""

    title: ShortText
    currency: Currency
    budget_total: MoneyText
    global_spec: dict[str, Any] = {}
    status: Literal["draft", "active"] = "draft"


class SetProjectStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.set_status``: move along ``PROJECT_TRANSITIONS``."""

    status: ProjectStatus


class PatchSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.patch_spec``: merge-patch (RFC 7396) the global spec at its ``expected_version``."""

    patch: dict[str, Any]
    expected_version: ExistingVersion


class SetBudgetTotal(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.set_budget_total``: refused below what is spent plus what is reserved."""

    total: MoneyText


class AddCost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.add_cost``: charge the budget; refused with ``budget_exceeded`` past what remains."""

    amount: PositiveMoneyText
    reason: ShortText
    artifact_id: Identifier | None = None

    def __post_init__(self) -> None:
        _positive(self.amount)


class RefundCost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.refund_cost``: give back money spent (a cost charged in error, or taken back by a rollback);
    refused with ``refund_exceeds_spent`` past what is spent."""

    amount: PositiveMoneyText
    reason: ShortText

    def __post_init__(self) -> None:
        _positive(self.amount)


class ReserveBudget(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.reserve_budget``: hold money for work in flight, for ``ttl_seconds`` at most.

    Note: a reservation counts against what remains until it is committed, released or expires,
    so two agents cannot both start work the budget can only pay once.
    """

    reservation_id: Identifier
    amount: PositiveMoneyText
    reason: ShortText
    ttl_seconds: TtlSeconds = 900

    def __post_init__(self) -> None:
        _positive(self.amount)


class CommitReservation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.commit_reservation``: spend ``amount`` (at most what was reserved; all of it when
    absent) and release the rest."""

    reservation_id: Identifier
    amount: MoneyText | None = None
    reason: ShortText | None = None
    artifact_id: Identifier | None = None


class ReleaseReservation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.release_reservation``: give the money back unspent."""

    reservation_id: Identifier
    reason: ShortText | None = None


class ExpireReservations(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.expire_reservations``: release every reservation past its expiry (sent by the sweeper)."""


class PutDnaEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.put_dna``: add (``expected_version`` 0) or replace a DNA bank entry at its version."""

    key: Identifier
    value: dict[str, Any]
    expected_version: ExpectedVersion


class RemoveDnaEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.remove_dna``: remove a DNA bank entry at its version."""

    key: Identifier
    expected_version: ExistingVersion


class CreateShot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.create_shot``: a new shot with its first fields; refused if the id is taken."""

    shot_id: Identifier
    fields: dict[str, Any] = {}

    def __post_init__(self) -> None:
        _refuse_reserved(self.fields, "fields")


class UpdateShot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.update_shot``: merge-patch (RFC 7396) a shot's fields.

    Guarded by the shot's ``expected_version`` (0 creates a shot that does not exist yet), or by
    ``preconditions`` instead: top-level field → the value it must still have (``null``: absent).
    Agents that edit different fields of one shot, each guarding its own, no longer collide.
    """

    shot_id: Identifier
    patch: dict[str, Any]
    expected_version: ExpectedVersion | None = None
    preconditions: Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_PRECONDITIONS)] | None = None

    def __post_init__(self) -> None:
        _refuse_reserved(self.patch, "patch")
        if self.expected_version is None and self.preconditions is None:
            raise ValueError("give expected_version or preconditions (or both)")


def _refuse_reserved(fields: dict[str, Any], name: str) -> None:
    reserved = RESERVED_SHOT_FIELDS.intersection(fields)
    if reserved:
        raise ValueError(f"{name} may not set the reserved fields {sorted(reserved)}")


class RegisterArtifact(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.register_artifact``: record a produced artifact; with a ``cost`` it charges the
    budget in the same command (from ``reservation_id`` when given), all or nothing."""

    artifact_id: Identifier
    kind: Identifier
    uri: Uri
    params: dict[str, Any] = {}
    cost: MoneyText | None = None
    shot_id: Identifier | None = None
    task_id: Identifier | None = None
    reservation_id: Identifier | None = None

    def __post_init__(self) -> None:
        if self.reservation_id is not None and self.cost is None:
            raise ValueError("reservation_id needs the cost to commit from it")


# ── events (past tense; a storage format) ───────────────────────────────────────────────


class ProjectCreated(msgspec.Struct, frozen=True):
    title: str
    currency: str
    budget_total: Decimal
    global_spec: dict[str, Any] = {}
    status: str = "draft"


class ProjectStatusChanged(msgspec.Struct, frozen=True):
    from_status: str
    to_status: str


class SpecPatched(msgspec.Struct, frozen=True):
    """The global spec was merge-patched; ``spec_version`` is the spec's version after it."""

    patch: dict[str, Any]
    spec_version: int


class BudgetTotalSet(msgspec.Struct, frozen=True):
    total: Decimal
    previous: Decimal


class CostAdded(msgspec.Struct, frozen=True):
    amount: Decimal
    reason: str
    artifact_id: str | None = None


class CostRefunded(msgspec.Struct, frozen=True):
    amount: Decimal
    reason: str


class BudgetReserved(msgspec.Struct, frozen=True):
    reservation_id: str
    amount: Decimal
    reason: str
    expires_at: datetime
    by: str = ""


class ReservationCommitted(msgspec.Struct, frozen=True):
    """``amount`` of the reservation was spent; the rest of it (``released``) went back."""

    reservation_id: str
    amount: Decimal
    released: Decimal
    reason: str
    artifact_id: str | None = None


class ReservationReleased(msgspec.Struct, frozen=True):
    """The reservation ended unspent: ``released`` by its holder or ``expired``."""

    reservation_id: str
    amount: Decimal
    why: Literal["released", "expired"]
    reason: str | None = None


class DnaEntryPut(msgspec.Struct, frozen=True):
    key: str
    value: dict[str, Any]
    entry_version: int
    by: str = ""


class DnaEntryRemoved(msgspec.Struct, frozen=True):
    key: str
    entry_version: int
    by: str = ""


class ShotCreated(msgspec.Struct, frozen=True):
    shot_id: str
    fields: dict[str, Any]
    by: str = ""


class ShotUpdated(msgspec.Struct, frozen=True):
    """A shot's fields were merge-patched; ``shot_version`` is the shot's version after it."""

    shot_id: str
    patch: dict[str, Any]
    shot_version: int
    by: str = ""


class ArtifactRegistered(msgspec.Struct, frozen=True):
    """An artifact was recorded; its cost, if any, is charged by the event that follows it."""

    artifact_id: str
    kind: str
    uri: str
    params: dict[str, Any] = {}
    cost: Decimal | None = None
    shot_id: str | None = None
    task_id: str | None = None
    reservation_id: str | None = None
    by: str = ""


class RaiseBudgetAlert(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.raise_budget_alert``: spending reached ``level`` percent of the budget (sent by the alert
    process manager); raised once per level and budget total."""

    level: Literal[80, 100]
    #: The total the sender saw: part of what identifies the alert (the decider judges on its own state).
    total: MoneyText | None = None


class BudgetAlertRaised(msgspec.Struct, frozen=True):
    level: int
    spent: Decimal
    total: Decimal


ProjectCommand = (
    CreateProject | SetProjectStatus | PatchSpec | SetBudgetTotal | AddCost | ReserveBudget | CommitReservation
    | ReleaseReservation | ExpireReservations | PutDnaEntry | RemoveDnaEntry | CreateShot | UpdateShot
    | RegisterArtifact | RaiseBudgetAlert | RefundCost
)
ProjectEvent = (
    ProjectCreated | ProjectStatusChanged | SpecPatched | BudgetTotalSet | CostAdded | BudgetReserved
    | ReservationCommitted | ReservationReleased | DnaEntryPut | DnaEntryRemoved | ShotCreated | ShotUpdated
    | ArtifactRegistered | BudgetAlertRaised | CostRefunded
)
