"""The documents the query API returns and the projector caches: one shape, written once."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec


class Budget(msgspec.Struct, frozen=True):
    total: Decimal
    spent: Decimal
    remaining: Decimal
    currency: str


class ProjectView(msgspec.Struct, frozen=True):
    """``GET /v1/projects/{id}``. ``shots`` maps a shot id to its fields plus ``id`` and ``version``."""

    id: str
    title: str
    currency: str
    budget: Budget
    global_spec: dict[str, Any]
    shots: dict[str, dict[str, Any]]
    version: int
    created_at: datetime
    updated_at: datetime


class TaskView(msgspec.Struct, frozen=True):
    id: str
    name: str
    priority: int
    payload: dict[str, Any] | None
    status: str
    version: int
    created_at: datetime
    updated_at: datetime


class Position(msgspec.Struct, frozen=True):
    partition: int
    offset: int


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


class Page(msgspec.Struct, frozen=True, omit_defaults=True):
    """A page of a list; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[Any]
    next_cursor: str | None = None
