"""The documents the query API returns and the projector caches: one shape, written once."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec


class Budget(msgspec.Struct, frozen=True):
    """Money of a project: ``remaining`` = ``total`` - ``spent`` - ``reserved``."""

    total: Decimal
    spent: Decimal
    remaining: Decimal
    currency: str
    reserved: Decimal = Decimal(0)


class ReservationView(msgspec.Struct, frozen=True):
    reservation_id: str
    amount: Decimal
    reason: str
    expires_at: datetime
    by: str


class BudgetView(msgspec.Struct, frozen=True):
    """``GET /v1/projects/{id}/budget``: the budget and the reservations holding money, soonest to expire first."""

    project_id: str
    total: Decimal
    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    currency: str
    reservations: list[ReservationView]
    version: int


class DnaEntryView(msgspec.Struct, frozen=True):
    """A DNA bank entry: its value, its own version and who set it."""

    value: dict[str, Any]
    version: int
    by: str


class SpecView(msgspec.Struct, frozen=True):
    """``GET /v1/projects/{id}/spec``: the global spec and its own version (what ``expected_version`` names)."""

    project_id: str
    global_spec: dict[str, Any]
    version: int


class DnaView(msgspec.Struct, frozen=True):
    """``GET /v1/projects/{id}/dna``: the DNA bank by key."""

    project_id: str
    entries: dict[str, DnaEntryView]
    version: int


class ProjectView(msgspec.Struct, frozen=True):
    """``GET /v1/projects/{id}``. ``shots`` maps a shot id to its fields plus ``id`` and ``version``;
    ``version`` is the project stream's, ``spec_version`` the global spec's own."""

    id: str
    title: str
    currency: str
    budget: Budget
    global_spec: dict[str, Any]
    shots: dict[str, dict[str, Any]]
    version: int
    created_at: datetime
    updated_at: datetime
    status: str = "draft"
    spec_version: int = 1
    dna: dict[str, DnaEntryView] = {}


class ProjectSummary(msgspec.Struct, frozen=True):
    """A project in a list: everything but its shots and DNA bank."""

    id: str
    title: str
    status: str
    currency: str
    budget: Budget
    spec_version: int
    version: int
    created_at: datetime
    updated_at: datetime


class ArtifactView(msgspec.Struct, frozen=True):
    """An artifact: what produced it, where it is, what it cost (charged when it was registered)."""

    project_id: str
    artifact_id: str
    kind: str
    uri: str
    params: dict[str, Any]
    cost: Decimal | None
    shot_id: str | None
    task_id: str | None
    reservation_id: str | None
    created_by: str
    created_at: datetime
    version: int


class ShotView(msgspec.Struct, frozen=True):
    """``GET /v1/projects/{id}/shots/{shot_id}``: the shot's own fields (any names, as written by
    ``project.create_shot`` and ``project.update_shot``) at the top level, with its ``id`` and ``version``,
    which win over fields of the same name. ``version`` is what ``project.update_shot`` takes as
    ``expected_version``."""

    id: str
    version: int


class DocumentView(msgspec.Struct, frozen=True):
    """``GET /v1/collections/{collection}/documents/{id}``: a document, its links and who wrote it when.
    ``version`` is what ``doc.patch`` takes as ``expected_version``."""

    collection: str
    id: str
    body: dict[str, Any]
    links: dict[str, str]
    version: int
    created_at: datetime
    updated_at: datetime
    created_by: str
    updated_by: str
    deleted: bool


class LeaseView(msgspec.Struct, frozen=True):
    """``GET /v1/leases/{name}``: ``held`` is false once ``expires_at`` has passed, whoever ``holder`` names."""

    name: str
    held: bool
    holder: str | None
    token: int
    expires_at: datetime | None
    version: int
    updated_at: datetime


class TaskProgressView(msgspec.Struct, frozen=True):
    percent: float | None = None
    message: str | None = None


class TaskView(msgspec.Struct, frozen=True):
    """A task: what it is, where it stands, and (while ``claimed`` or ``running``) which node holds it with
    which fencing token until when."""

    id: str
    name: str
    priority: int
    payload: dict[str, Any] | None
    status: str
    version: int
    created_at: datetime
    updated_at: datetime
    type: str = "default"
    user: str | None = None
    parent: str | None = None
    required_skills: list[str] = []
    depends_on: list[str] = []
    node: str | None = None
    token: int = 0
    lease_expires_at: datetime | None = None
    attempts: int = 0
    max_attempts: int = 3
    not_before: datetime | None = None
    progress: TaskProgressView | None = None
    error: str | None = None
    finished_at: datetime | None = None


class Position(msgspec.Struct, frozen=True):
    partition: int
    offset: int


class FieldChange(msgspec.Struct, frozen=True):
    """One leaf an event changed in its stream's state (``query_api/history.py`` computes them).

    ``path`` is a JSON Pointer (RFC 6901) into the state; ``op`` says whether the leaf was
    ``add``-ed (``from`` is null), ``remove``-d (``to`` is null) or ``replace``-d, so that a
    null value and an absent one stay apart.
    """

    path: str
    op: Literal["add", "remove", "replace"]
    from_: Any = msgspec.field(default=None, name="from")
    to: Any = None


class HistoryEntry(msgspec.Struct, frozen=True):
    """One line of a stream's audit trail: who, when, which command, what."""

    stream: str
    version: int
    type: str
    schema_version: int
    event_id: str
    actor: str
    command_id: str
    correlation_id: str
    causation_id: str
    occurred_at: datetime
    position: Position
    payload: Any
    #: The W3C trace id of the command that wrote the event (``None`` when it came without a trace).
    trace_id: str | None = None
    #: What the event changed in the stream's state; ``None`` where it was not computed.
    changes: list[FieldChange] | None = None
    #: The agent run that sent the command, its model and prompt hash, when it said.
    agent_run_id: str | None = None
    agent_model: str | None = None
    prompt_hash: str | None = None


class StreamState(msgspec.Struct, frozen=True):
    """``GET /v1/streams/{stream}/state``: the stream's state (as its decider folds it) after ``version``,
    written at ``occurred_at``."""

    stream: str
    version: int
    occurred_at: datetime | None
    state: Any


class Page(msgspec.Struct, frozen=True, omit_defaults=True):
    """A page of a list; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[Any]
    next_cursor: str | None = None
