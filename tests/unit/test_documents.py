"""The document builders: rows in, the documents of ``schemas.views`` out."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from blackboard.projector.documents import history_entry, project_view, shot_document, task_view
from blackboard.schemas.views import Budget, Position

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = datetime(2025, 1, 2, tzinfo=UTC)


def project_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "p-1", "title": "Trailer", "currency": "EUR", "budget_total": Decimal("100.0000"),
        "spent": Decimal("12.5000"), "global_spec": {"style": "noir"}, "version": 5, "partition": 2,
        "last_offset": 41, "created_at": T0, "updated_at": T1, "status": "active", "reserved": Decimal(0),
        "spec_version": 2, "dna": {}, "reservations": {},
    }
    return row | overrides


def shot_row(shot_id: str, version: int, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"project_id": "p-1", "shot_id": shot_id, "fields": fields or {}, "version": version, "updated_at": T1}


def test_a_project_has_its_budget_remaining_and_its_shots_by_id() -> None:
    shots = [shot_row("s-2", 1, {"status": "draft"}), shot_row("s-1", 3, {"status": "final"})]

    view = project_view(project_row(), shots)

    assert view.budget == Budget(Decimal("100.0000"), Decimal("12.5000"), Decimal("87.5000"), "EUR")
    assert view.shots == {"s-1": {"status": "final", "id": "s-1", "version": 3},
                          "s-2": {"status": "draft", "id": "s-2", "version": 1}}
    assert (view.id, view.title, view.version, view.global_spec) == ("p-1", "Trailer", 5, {"style": "noir"})
    assert (view.created_at, view.updated_at) == (T0, T1)


def test_a_project_without_shots_has_an_empty_map() -> None:
    assert project_view(project_row(spent=Decimal("100.0000")), []).shots == {}


def test_the_shots_order_does_not_change_the_bytes() -> None:
    shots = [shot_row("b", 1), shot_row("a", 2), shot_row("B", 1)]

    forward = msgspec.json.encode(project_view(project_row(), shots))
    backward = msgspec.json.encode(project_view(project_row(), list(reversed(shots))))

    assert forward == backward
    assert list(msgspec.json.decode(forward)["shots"]) == ["B", "a", "b"]


def test_a_shot_field_named_id_or_version_cannot_hide_the_real_ones() -> None:
    shot = shot_row("s-1", 4, {"id": "fake", "version": 99, "x": 1})

    assert shot_document(shot) == {"id": "s-1", "version": 4, "x": 1}


def test_a_task_document() -> None:
    row = {"id": "t-1", "name": "render", "priority": 3, "payload": None, "status": "running", "version": 3,
           "partition": 0, "last_offset": 9, "created_at": T0, "updated_at": T1, "type": "render", "user_id": "u-1",
           "parent": None, "required_skills": ["gpu"], "depends_on": [], "node": "n-1", "token": 2,
           "lease_expires_at": T1, "attempts": 1, "max_attempts": 3, "not_before": None,
           "progress": {"percent": 50.0, "message": "half"}, "state": {"error": "lease_expired"},
           "finished_at": None}

    view = task_view(row)

    assert msgspec.to_builtins(view) == {
        "id": "t-1", "name": "render", "priority": 3, "payload": None, "status": "running", "version": 3,
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-02T00:00:00Z", "type": "render",
        "user": "u-1", "parent": None, "required_skills": ["gpu"], "depends_on": [], "node": "n-1", "token": 2,
        "lease_expires_at": "2025-01-02T00:00:00Z", "attempts": 1, "max_attempts": 3, "not_before": None,
        "progress": {"percent": 50.0, "message": "half"}, "error": "lease_expired", "finished_at": None}


def test_a_history_entry_names_who_when_which_command_and_where() -> None:
    row = {"stream": "project:p-1", "stream_version": 2, "partition": 1, "offset": 77, "event_id": "e-2",
           "type": "project.cost_added", "schema_version": 1, "actor": "alice", "command_id": "c-9",
           "correlation_id": "corr", "causation_id": "cause", "occurred_at": T0, "recorded_at": T1,
           "payload": {"amount": "1.00", "reason": "r"}}

    entry = history_entry(row)

    assert (entry.stream, entry.version, entry.type, entry.actor, entry.command_id) == (
        "project:p-1", 2, "project.cost_added", "alice", "c-9")
    assert entry.position == Position(partition=1, offset=77)
    assert entry.payload == {"amount": "1.00", "reason": "r"} and entry.occurred_at == T0
