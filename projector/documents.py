"""Read-model rows → the documents of ``schemas.views``: the one place a document's shape is built.

The projector caches what these return and the query API builds the same documents from
PostgreSQL, so for the same rows both encode to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from blackboard.schemas.views import Budget, HistoryEntry, Position, ProjectView, TaskView

#: A row of the read models: an ``asyncpg.Record`` or a plain dict with the same columns.
Row = Mapping[str, Any]


def project_view(project: Row, shots: Iterable[Row]) -> ProjectView:
    """The project document: its budget (remaining = total - spent) and every one of its shots.

    Note: the shots are ordered by id here, not by the query, so that a database's collation
    cannot change the bytes of the document.
    """
    total, spent = project["budget_total"], project["spent"]
    ordered = sorted(shots, key=lambda s: str(s["shot_id"]))
    return ProjectView(
        id=project["id"],
        title=project["title"],
        currency=project["currency"],
        budget=Budget(total=total, spent=spent, remaining=total - spent, currency=project["currency"]),
        global_spec=project["global_spec"],
        shots={s["shot_id"]: shot_document(s) for s in ordered},
        version=project["version"],
        created_at=project["created_at"],
        updated_at=project["updated_at"],
    )


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
    )
