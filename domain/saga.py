"""The saga decider: stream ``saga:<id>``; a saga starts once, records each step once and ends once."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from blackboard.domain.decider import Context, Rejection
from blackboard.schemas.saga import (
    ArtifactSagaStarted,
    FinishSaga,
    RecordSagaStep,
    SagaArtifact,
    SagaCommand,
    SagaEvent,
    SagaFinished,
    SagaStepRecorded,
    SagaTask,
    StartArtifactSaga,
)

CATEGORY = "saga"


class Saga(msgspec.Struct, frozen=True):
    project_id: str
    amount: str
    task: SagaTask
    artifact: SagaArtifact
    deadline: datetime
    steps: list[str] = []
    #: ``running`` until it ends ``completed``, ``compensated`` or ``failed``.
    status: str = "running"
    reason: str = ""


initial_state: Saga | None = None


def evolve(state: Saga | None, event: SagaEvent) -> Saga | None:
    match event:
        case ArtifactSagaStarted() as e:
            return Saga(e.project_id, e.amount, e.task, e.artifact, e.deadline)
    if state is None:
        return None
    match event:
        case SagaStepRecorded(step=step):
            return msgspec.structs.replace(state, steps=[*state.steps, step])
        case SagaFinished() as finished:
            return msgspec.structs.replace(state, status=finished.outcome, reason=finished.reason)
    return state


def decide(state: Saga | None, command: SagaCommand, ctx: Context) -> list[SagaEvent] | Rejection:
    if isinstance(command, StartArtifactSaga):
        if state is not None:
            same = (state.project_id, state.amount, state.task, state.artifact) == (
                command.project_id, command.amount, command.task, command.artifact)
            return [] if same else Rejection("already_exists", "the saga already exists with other values")
        return [ArtifactSagaStarted(command.project_id, command.amount, command.task, command.artifact,
                                    ctx.now + timedelta(seconds=command.timeout_seconds), command.timeout_seconds)]
    if state is None:
        return Rejection("not_found", "the saga does not exist")
    if isinstance(command, RecordSagaStep):
        if command.step in state.steps:
            return []
        return [SagaStepRecorded(command.step, dict(command.detail))]
    assert isinstance(command, FinishSaga)
    if state.status != "running":
        return [] if state.status == command.outcome else Rejection(
            "saga_finished", f"the saga already ended {state.status}", {"status": state.status})
    return [SagaFinished(command.outcome, command.reason)]
