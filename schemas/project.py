"""Project commands and events: creation, the budget and its costs, shots."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from blackboard.schemas.types import Currency, ExpectedVersion, Identifier, MoneyText, PositiveMoneyText, ShortText

#: Keys a shot document carries itself; a patch may not set them.
RESERVED_SHOT_FIELDS = frozenset({"id", "version"})

# ── commands (imperative) ───────────────────────────────────────────────────────────────


class CreateProject(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.create``: a project with a budget and a free-form global spec."""

    title: ShortText
    currency: Currency
    budget_total: MoneyText
    global_spec: dict[str, Any] = {}


class AddCost(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.add_cost``: charge the budget; refused with ``budget_exceeded`` past the total."""

    amount: PositiveMoneyText
    reason: ShortText
    artifact_id: Identifier | None = None

    def __post_init__(self) -> None:
        if Decimal(self.amount) == 0:
            raise ValueError("amount must be greater than 0")


class UpdateShot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``project.update_shot``: merge-patch (RFC 7396) a shot's fields.

    ``expected_version`` is the shot's version; 0 creates a shot that does not exist yet.
    """

    shot_id: Identifier
    patch: dict[str, Any]
    expected_version: ExpectedVersion

    def __post_init__(self) -> None:
        reserved = RESERVED_SHOT_FIELDS.intersection(self.patch)
        if reserved:
            raise ValueError(f"patch may not set the reserved fields {sorted(reserved)}")


# ── events (past tense; a storage format) ───────────────────────────────────────────────


class ProjectCreated(msgspec.Struct, frozen=True):
    title: str
    currency: str
    budget_total: Decimal
    global_spec: dict[str, Any] = {}


class CostAdded(msgspec.Struct, frozen=True):
    amount: Decimal
    reason: str
    artifact_id: str | None = None


class ShotUpdated(msgspec.Struct, frozen=True):
    """A shot's fields were merge-patched; ``shot_version`` is the shot's version after it."""

    shot_id: str
    patch: dict[str, Any]
    shot_version: int


ProjectCommand = CreateProject | AddCost | UpdateShot
ProjectEvent = ProjectCreated | CostAdded | ShotUpdated
