"""The artifact saga: reserve budget → run a task → register the artifact, or release the reservation.

Steps, by what the log shows (each answer is an intent with a deterministic id):

* ``saga.started`` → reserve the amount on the project (reservation ``saga-<id>``, held until
  the saga's deadline plus a margin, so a saga nobody drives frees its money by itself).
* the reservation made → record ``budget_reserved``, create the task ``saga-<id>``.
* the task succeeded → register the artifact with the reserved amount as its cost (the
  project commits the reservation in the same batch) → record ``artifact_registered``, finish
  ``completed``.
* the task failed for good or was cancelled → release the reservation → finish ``compensated``.
* a tick past the deadline while the task has not ended → cancel the task (then as above); a
  reservation refused (not enough budget) → finish ``failed``: nothing was reserved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from blackboard.processes.manager import Intent, Seen, intent
from blackboard.schemas import project as p
from blackboard.schemas import saga as s
from blackboard.schemas import task as t
from blackboard.schemas.clock import Ticked
from blackboard.schemas.tenancy import scope_id, split_id, tenant_of_stream

#: Seconds a saga's reservation outlives its deadline.
RESERVATION_MARGIN = 300
_PREFIX = "saga-"


@dataclass(slots=True)
class Run:
    started: s.ArtifactSagaStarted
    #: ``reserving``, ``running``, ``registering``, ``releasing``, then ``done``.
    stage: str = "reserving"
    task_status: str | None = None
    why: str = ""
    #: The last event that moved the saga: what it calls for next is caused by it, live or sent again after a
    #: restart (the run the saga belongs to follows its commands by their causation and correlation).
    cause: Seen | None = None


@dataclass(slots=True)
class Sagas:
    runs: dict[str, Run] = field(default_factory=dict)
    last_tick: datetime | None = None


class ArtifactSaga:
    name = "artifact-saga"

    def initial(self) -> Sagas:
        return Sagas()

    def handle(self, state: Sagas, seen: Seen) -> tuple[Sagas, list[Intent]]:
        e = seen.event
        match e:
            case s.ArtifactSagaStarted():
                sid = seen.ident
                state.runs[sid] = Run(e, cause=seen)
            case s.SagaFinished():
                if seen.ident in state.runs:
                    state.runs[seen.ident].stage = "done"
                return state, []
            case p.BudgetReserved(reservation_id=rid) | p.ReservationReleased(reservation_id=rid) \
                    | p.ReservationCommitted(reservation_id=rid) if rid.startswith(_PREFIX):
                sid = scope_id(tenant_of_stream(seen.stream), rid.removeprefix(_PREFIX))
                if sid in state.runs:
                    self._reservation(state.runs[sid], e)
                    state.runs[sid].cause = seen
            case _ if seen.stream.startswith("task:") and split_id(seen.ident)[1].startswith(_PREFIX):
                tenant, local = split_id(seen.ident)
                sid = scope_id(tenant, local.removeprefix(_PREFIX))
                if sid in state.runs:
                    self._task(state.runs[sid], e)
                    state.runs[sid].cause = seen
            case Ticked(at=at):
                state.last_tick = at
                return state, [i for sid in sorted(state.runs) for i in self._next(sid, state, seen)]
            case _:
                return state, []
        return state, self._next(sid, state, seen)

    @staticmethod
    def _reservation(run: Run, e: Any) -> None:
        if isinstance(e, p.BudgetReserved) and run.stage == "reserving":
            run.stage = "running"
        elif isinstance(e, p.ReservationReleased) and run.stage != "done":
            run.stage, run.why = "released", run.why or f"reservation {e.why}"
        elif isinstance(e, p.ReservationCommitted) and run.stage != "done":
            run.stage = "registered"

    @staticmethod
    def _task(run: Run, e: Any) -> None:
        match e:
            case t.TaskSucceeded():
                run.task_status = "succeeded"
                if run.stage == "running":
                    run.stage = "registering"
            case t.AttemptFailed(final=True) | t.TaskCancelled() | t.DependencyFailed():
                run.task_status = "ended"
                run.why = run.why or getattr(e, "error", "") or getattr(e, "reason", "") or "task did not succeed"
                if run.stage == "running":
                    run.stage = "releasing"
            case t.TaskCreated():
                run.task_status = run.task_status or "created"

    def _next(self, sid: str, state: Sagas, cause: Seen | None) -> list[Intent]:
        """What saga ``sid`` calls for in its stage (the same answer however often it is asked)."""
        run = state.runs.get(sid)
        if run is None or run.stage == "done":
            return []
        st, saga_stream = run.started, f"saga:{sid}"
        # ``sid`` is a stored id (``acme~s-1``): the reservation is named inside the project, the task inside the
        # saga's tenant (schemas/tenancy.py).
        tenant, local = split_id(sid)
        project, reservation = f"project:{st.project_id}", f"{_PREFIX}{local}"
        task_id = scope_id(tenant, f"{_PREFIX}{local}")
        late = state.last_tick is not None and state.last_tick >= st.deadline
        out: list[Intent] = []

        def send(stream: str, type_: str, payload: dict[str, Any]) -> None:
            out.append(intent(self.name, stream, type_, payload, cause))

        match run.stage:
            case "reserving":
                ttl = min(st.timeout_seconds + RESERVATION_MARGIN, 86_400)
                if late:
                    send(saga_stream, "saga.finish", {"outcome": "failed", "reason": "timed out before the budget "
                                                                                     "was reserved"})
                else:
                    send(project, "project.reserve_budget", {"reservation_id": reservation, "amount": st.amount,
                                                             "reason": f"saga {local}", "ttl_seconds": ttl})
            case "running":
                send(saga_stream, "saga.record_step", {"step": "budget_reserved", "detail": {"amount": st.amount}})
                task = st.task
                send(f"task:{task_id}", "task.create", {
                    "name": task.name, "type": task.type, "priority": task.priority, "payload": task.payload,
                    "required_skills": task.required_skills, "max_attempts": task.max_attempts})
                if late and run.task_status != "succeeded":
                    send(f"task:{task_id}", "task.cancel", {"reason": "saga timed out"})
            case "registering":
                send(saga_stream, "saga.record_step", {"step": "task_succeeded", "detail": {"task_id": task_id}})
                a = st.artifact
                send(project, "project.register_artifact", {
                    "artifact_id": a.artifact_id, "kind": a.kind, "uri": a.uri, "cost": st.amount,
                    "task_id": task_id, "reservation_id": reservation})
            case "registered":
                send(saga_stream, "saga.record_step", {"step": "artifact_registered",
                                                       "detail": {"artifact_id": st.artifact.artifact_id}})
                send(saga_stream, "saga.finish", {"outcome": "completed"})
            case "releasing":
                send(saga_stream, "saga.record_step", {"step": "task_failed", "detail": {"why": run.why[:500]}})
                send(project, "project.release_reservation", {"reservation_id": reservation,
                                                              "reason": run.why[:1000] or "saga compensation"})
            case "released":
                send(saga_stream, "saga.record_step", {"step": "budget_released", "detail": {}})
                send(saga_stream, "saga.finish", {"outcome": "compensated", "reason": run.why[:1000]})
        return out

    def pending(self, state: Sagas) -> list[Intent]:
        return [i for sid in sorted(state.runs) for i in self._next(sid, state, state.runs[sid].cause)]

    def due(self, state: Sagas) -> datetime | None:
        return min((r.started.deadline for r in state.runs.values() if r.stage in ("reserving", "running")),
                   default=None)

    def rejected(self, state: Sagas, sent: Intent, code: str) -> list[Intent]:
        """A reservation refused (not enough budget, project archived…) ends the saga ``failed``."""
        if sent.type != "project.reserve_budget":
            return []
        sid = scope_id(tenant_of_stream(sent.stream), str(sent.payload["reservation_id"]).removeprefix(_PREFIX))
        run = state.runs.get(sid)
        if run is None or run.stage != "reserving":
            return []
        run.stage = "done"
        return [intent(self.name, f"saga:{sid}", "saga.finish", {"outcome": "failed", "reason": code})]
