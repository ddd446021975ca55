"""Saga commands and events: a long-running process whose steps and outcome are kept in its own stream.

The artifact saga: reserve budget → create and run a task → on success register the artifact
(which commits the reservation), on failure or timeout release the reservation. The saga process
manager drives it; the ``saga:<id>`` stream records where it stands, so its history shows each
step and the outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from blackboard.schemas.project import Uri
from blackboard.schemas.types import Identifier, PositiveMoneyText, Priority, ShortText, Skill

SagaOutcome = Literal["completed", "compensated", "failed"]


class SagaTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The task the saga runs (its id is ``saga-<saga id>``)."""

    name: ShortText
    type: Identifier = "default"
    priority: Priority = 0
    payload: dict[str, Any] = {}
    required_skills: Annotated[list[Skill], msgspec.Meta(max_length=32)] = []
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1


class SagaArtifact(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    artifact_id: Identifier
    kind: Identifier
    uri: Uri


class StartArtifactSaga(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``saga.start_artifact``: generate an artifact for ``project_id`` at a cost of at most ``amount``."""

    project_id: Identifier
    amount: PositiveMoneyText
    task: SagaTask
    artifact: SagaArtifact
    timeout_seconds: Annotated[int, msgspec.Meta(ge=1, le=7 * 86_400)] = 3600


class RecordSagaStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``saga.record_step``: the process manager saw a step happen (recorded once per step)."""

    step: Identifier
    detail: dict[str, Any] = {}


class FinishSaga(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``saga.finish``: the saga ended: ``completed``, ``compensated`` (its reservation released) or ``failed``."""

    outcome: SagaOutcome
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class ArtifactSagaStarted(msgspec.Struct, frozen=True):
    project_id: str
    amount: str
    task: SagaTask
    artifact: SagaArtifact
    deadline: datetime
    timeout_seconds: int = 3600


class SagaStepRecorded(msgspec.Struct, frozen=True):
    step: str
    detail: dict[str, Any] = {}


class SagaFinished(msgspec.Struct, frozen=True):
    outcome: str
    reason: str = ""


SagaCommand = StartArtifactSaga | RecordSagaStep | FinishSaga
SagaEvent = ArtifactSagaStarted | SagaStepRecorded | SagaFinished

SYSTEM_COMMANDS = frozenset({"saga.record_step", "saga.finish"})
