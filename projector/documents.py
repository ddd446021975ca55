"""Read-model rows → the documents of ``schemas.views``: the one place a document's shape is built.

The projector caches what these return and the query API builds the same documents from
PostgreSQL, so for the same rows both encode to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from blackboard.schemas.views import (
    ArtifactView,
    Budget,
    BudgetView,
    DnaEntryView,
    DnaView,
    HistoryEntry,
    LeaseView,
    Position,
    ProjectSummary,
    ProjectView,
    ReservationView,
    SpecView,
    TaskProgressView,
    TaskView,
)

#: A row of the read models: an ``asyncpg.Record`` or a plain dict with the same columns.
Row = Mapping[str, Any]

#: The ``projects`` columns a project document is built from (``state``, the decider's, is not one).
PROJECT_VIEW_COLUMNS = ("id, title, status, currency, budget_total, spent, reserved, global_spec, spec_version, dna, "
                        "reservations, version, partition, last_offset, created_at, updated_at")


def project_view(project: Row, shots: Iterable[Row]) -> ProjectView:
    """The project document: its budget (remaining = total - spent) and every one of its shots.

    Note: the shots are ordered by id here, not by the query, so that a database's collation
    cannot change the bytes of the document.
    """
    ordered = sorted(shots, key=lambda s: str(s["shot_id"]))
    return ProjectView(
        id=project["id"],
        title=project["title"],
        currency=project["currency"],
        budget=budget(project),
        global_spec=project["global_spec"],
        shots={s["shot_id"]: shot_document(s) for s in ordered},
        version=project["version"],
        created_at=project["created_at"],
        updated_at=project["updated_at"],
        status=project["status"],
        spec_version=project["spec_version"],
        dna=dna_entries(project),
    )


def budget(project: Row) -> Budget:
    """The budget of a project row: remaining = total - spent - reserved."""
    total, spent, reserved = project["budget_total"], project["spent"], project["reserved"]
    return Budget(total=total, spent=spent, remaining=total - spent - reserved, currency=project["currency"],
                  reserved=reserved)


def dna_entries(project: Row) -> dict[str, DnaEntryView]:
    """The DNA bank of a project row, by key (sorted, so the bytes do not depend on insertion order)."""
    entries = project["dna"]
    return {k: DnaEntryView(entries[k]["value"], entries[k]["version"], entries[k]["by"]) for k in sorted(entries)}


def project_summary(project: Row) -> ProjectSummary:
    """A project in a list."""
    return ProjectSummary(id=project["id"], title=project["title"], status=project["status"],
                          currency=project["currency"], budget=budget(project), spec_version=project["spec_version"],
                          version=project["version"], created_at=project["created_at"],
                          updated_at=project["updated_at"])


def budget_view(project: Row) -> BudgetView:
    """The budget document, with the reservations that hold money, soonest to expire first."""
    b = budget(project)
    held = project["reservations"]
    reservations = sorted(
        (ReservationView(rid, _decimal(r["amount"]), r["reason"], _time(r["expires_at"]), r["by"])
         for rid, r in held.items()),
        key=lambda r: (r.expires_at, r.reservation_id),
    )
    return BudgetView(project["id"], b.total, b.spent, b.reserved, b.remaining, b.currency, reservations,
                      project["version"])


def spec_view(project: Row) -> SpecView:
    return SpecView(project["id"], project["global_spec"], project["spec_version"])


def dna_view(project: Row) -> DnaView:
    return DnaView(project["id"], dna_entries(project), project["version"])


def artifact_view(row: Row) -> ArtifactView:
    return ArtifactView(
        project_id=row["project_id"], artifact_id=row["artifact_id"], kind=row["kind"], uri=row["uri"],
        params=row["params"], cost=row["cost"], shot_id=row["shot_id"], task_id=row["task_id"],
        reservation_id=row["reservation_id"], created_by=row["created_by"], created_at=row["created_at"],
        version=row["version"],
    )


def lease_view(row: Row) -> LeaseView:
    """A lease row with ``held`` (computed by the query, against the database's clock)."""
    return LeaseView(name=row["name"], held=row["held"], holder=row["holder"] if row["held"] else None,
                     token=row["token"], expires_at=row["expires_at"], version=row["version"],
                     updated_at=row["updated_at"])


def _decimal(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def shot_document(shot: Row) -> dict[str, Any]:
    """A shot's fields plus its ``id`` and ``version`` (which win over fields of the same name)."""
    return {**shot["fields"], "id": shot["shot_id"], "version": shot["version"]}


def task_view(task: Row) -> TaskView:
    """The task document."""
    return TaskView(
        id=task["id"],
        name=task["name"],
        priority=task["priority"],
        payload=task["payload"],
        status=task["status"],
        version=task["version"],
        created_at=task["created_at"],
        updated_at=task["updated_at"],
        type=task["type"],
        user=task["user_id"],
        parent=task["parent"],
        required_skills=list(task["required_skills"]),
        depends_on=list(task["depends_on"]),
        node=task["node"],
        token=task["token"],
        lease_expires_at=task["lease_expires_at"],
        attempts=task["attempts"],
        max_attempts=task["max_attempts"],
        not_before=task["not_before"],
        progress=msgspec.convert(task["progress"], TaskProgressView) if task["progress"] else None,
        error=(task["state"] or {}).get("error"),
        finished_at=task["finished_at"],
    )


def history_entry(change: Row) -> HistoryEntry:
    """One line of an audit trail, from a ``change_log`` row."""
    return HistoryEntry(
        stream=change["stream"],
        version=change["stream_version"],
        type=change["type"],
        schema_version=change["schema_version"],
        event_id=change["event_id"],
        actor=change["actor"],
        command_id=change["command_id"],
        correlation_id=change["correlation_id"],
        causation_id=change["causation_id"],
        occurred_at=change["occurred_at"],
        position=Position(partition=change["partition"], offset=change["offset"]),
        payload=change["payload"],
        trace_id=change.get("trace_id"),
        agent_run_id=change.get("agent_run_id"),
        agent_model=change.get("agent_model"),
        prompt_hash=change.get("prompt_hash"),
    )
