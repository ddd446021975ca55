"""The views of agent runs: what a run did, what followed from it, and the plan that takes it back."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from blackboard.schemas.views import FieldChange, HistoryEntry


class RunMoney(msgspec.Struct, frozen=True):
    """The money a run moved on one project: ``spent`` (costs and committed reservations) and ``reserved``."""

    project_id: str
    currency: str | None
    spent: str
    reserved: str


class RunStream(msgspec.Struct, frozen=True):
    """A stream a run wrote to, with how many of its events went there."""

    stream: str
    events: int


class RunSummary(msgspec.Struct, frozen=True):
    """``GET /v1/runs/{run_id}``: one agent run as the audit trail records it.

    ``outcomes`` counts the run's commands by outcome. Only ``accepted`` is known: the audit trail
    holds the events appended, and a refused command appends none (its refusal is answered to the
    sender and kept on the command-results topic, not in the read models).
    """

    run_id: str
    models: list[str]
    prompt_hashes: list[str]
    principals: list[str]
    first_at: datetime
    last_at: datetime
    events: int
    commands: int
    #: Events by type (the log records events; a command's type is the event types it appended).
    by_type: dict[str, int]
    outcomes: dict[str, int]
    streams: list[RunStream]
    money: list[RunMoney]


class RunChanges(msgspec.Struct, frozen=True, omit_defaults=True):
    """``GET /v1/runs/{run_id}/changes``: the run's events in log order, each with the fields it changed."""

    run_id: str
    items: list[HistoryEntry]
    next_cursor: str | None = None


class Effect(msgspec.Struct, frozen=True):
    """An event that followed from a run: ``chain`` is the event ids from the run's event that caused it
    (first) to this one's direct cause (last)."""

    entry: HistoryEntry
    chain: list[str]
    depth: int


class RunEffects(msgspec.Struct, frozen=True):
    """``GET /v1/runs/{run_id}/effects``: events appended because of the run's events, transitively.

    ``truncated`` says the walk stopped at its bound (``max_depth`` levels or ``limit`` events).
    """

    run_id: str
    items: list[Effect]
    truncated: bool = False


class RollbackRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/runs/{run_id}/rollback`` body: ``dry_run`` answers the plan and sends nothing; without it the
    plan is sent as commands."""

    dry_run: bool = False
    #: ``skip`` leaves a field someone else changed after the run as it is; ``overwrite`` puts it back anyway.
    on_conflict: Literal["skip", "overwrite"] = "skip"
    #: A position (the run's last command's): plan once the audit trail has passed it.
    consistent_with: str | None = None


class Conflict(msgspec.Struct, frozen=True):
    """A field the run changed that someone else changed later: ``run_value`` is what the run left,
    ``current`` what it holds now, ``by`` who changed it since."""

    stream: str
    path: str
    before: Any
    run_value: Any
    current: Any
    by: list[str]


class PlannedCommand(msgspec.Struct, frozen=True):
    """One compensating command: sent as ``type`` on ``stream`` with ``command_id``; ``changes`` are the
    fields it moves from their current value to the restored one."""

    stream: str
    type: str
    payload: dict[str, Any]
    command_id: str
    changes: list[FieldChange]
    #: ``planned`` (dry run), ``accepted``, ``rejected`` or ``replayed`` (already applied before).
    status: str = "planned"
    detail: str | None = None
    #: The consistency token of an accepted command: read with it to see the rollback.
    position: str | None = None


class Unrestorable(msgspec.Struct, frozen=True):
    """Something the run did that no command takes back (an artifact registered stays on record)."""

    stream: str
    path: str
    reason: str


class RollbackPlan(msgspec.Struct, frozen=True):
    """The compensating commands of a run, the conflicts skipped (or overwritten) and what cannot be undone."""

    run_id: str
    rollback_id: str
    dry_run: bool
    on_conflict: str
    commands: list[PlannedCommand]
    conflicts: list[Conflict]
    unrestorable: list[Unrestorable]
