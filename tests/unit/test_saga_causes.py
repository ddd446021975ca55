"""What a saga sends again after a restart is caused by the event that moved it, as when it was sent live."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from blackboard.processes.manager import Seen
from blackboard.processes.saga import ArtifactSaga
from blackboard.schemas import project as p
from blackboard.schemas import saga as s

AT = datetime(2026, 1, 2, tzinfo=UTC)


def _started() -> Seen:
    event = s.ArtifactSagaStarted(project_id="p-1", amount="10", task=s.SagaTask(name="render"),
                                  artifact=s.SagaArtifact(artifact_id="a-1", kind="video", uri="s3://b/a-1.mp4"),
                                  deadline=AT + timedelta(hours=1))
    return Seen("saga:sg-1", "saga.artifact_started", event, "ev-start", "corr-run-a", AT)


def test_pending_after_a_restart_carries_the_cause_the_live_intents_carried() -> None:
    saga = ArtifactSaga()
    state, live = saga.handle(saga.initial(), _started())
    again = saga.pending(state)  # what a runtime that caught up after the event sends
    assert [i.type for i in live] == [i.type for i in again] == ["project.reserve_budget"]
    assert [(i.cause_event_id, i.correlation_id, i.command_id) for i in again] == \
        [(i.cause_event_id, i.correlation_id, i.command_id) for i in live] == \
        [("ev-start", "corr-run-a", live[0].command_id)]


def test_the_next_stage_is_caused_by_the_event_that_moved_the_saga() -> None:
    saga = ArtifactSaga()
    state, _ = saga.handle(saga.initial(), _started())
    reserved = Seen("project:p-1", "project.budget_reserved",
                    p.BudgetReserved(reservation_id="saga-sg-1", amount=Decimal("10"), reason="saga sg-1",
                                     expires_at=AT + timedelta(hours=2)),
                    "ev-reserved", "corr-run-a", AT)
    state, live = saga.handle(state, reserved)
    again = saga.pending(state)
    assert {i.type for i in again} == {"saga.record_step", "task.create"}
    assert {(i.cause_event_id, i.correlation_id) for i in again} == {("ev-reserved", "corr-run-a")}
    assert sorted(i.command_id for i in again) == sorted(i.command_id for i in live)
