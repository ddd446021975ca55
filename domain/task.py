"""The task decider: stream ``task:<id>``; claims with leases and fencing tokens, retries, dependencies.

Time comes from the command's ``Context`` (the owner's clock, written into the events) or, for
an expiry, from the clock tick of the log that the process manager read (``ExpireClaim.at``): the
decider never reads a clock, and a replay folds the same events into the same state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from blackboard.domain.decider import Context, Rejection
from blackboard.schemas.task import (
    FINISHED,
    HELD,
    SET_STATUS_TRANSITIONS,
    TRANSITIONS,
    AttemptFailed,
    CancelTask,
    ClaimTask,
    CompleteTask,
    CreateTask,
    DependencyFailed,
    ExpireClaim,
    FailDependency,
    FailTask,
    OverrideTaskStatus,
    Progress,
    ReleaseClaim,
    ReportProgress,
    RetryTask,
    SetTaskStatus,
    StartTask,
    TaskCancelled,
    TaskClaimed,
    TaskCommand,
    TaskCreated,
    TaskEvent,
    TaskProgressed,
    TaskRetried,
    TaskStarted,
    TaskStatusChanged,
    TaskSucceeded,
    TaskUnblocked,
    UnblockTask,
)

CATEGORY = "task"
#: The longest wait between two attempts, however many failed.
MAX_BACKOFF = timedelta(hours=1)

# ── state ──────────────────────────────────────────────────────────────────────────────


class Claim(msgspec.Struct, frozen=True):
    """Who holds the task, with which fencing token, until when (extended by start and progress)."""

    node: str
    token: int
    expires_at: datetime
    lease_seconds: int


class Task(msgspec.Struct, frozen=True):
    """A task as its decisions need it: what it is, where it stands, who holds it, what it waits for."""

    name: str
    priority: int
    payload: dict[str, Any]
    status: str
    required_skills: list[str] = []
    depends_on: list[str] = []
    type: str = "default"
    user: str | None = None
    parent: str | None = None
    max_attempts: int = 3
    retry_backoff_seconds: float = 5.0
    lease_seconds: int = 30
    on_dependency_failure: str = "fail"
    #: Attempts that ended without success.
    attempts: int = 0
    #: The last fencing token granted (0: never claimed).
    token: int = 0
    claim: Claim | None = None
    #: A retried task is not claimable before this time.
    not_before: datetime | None = None
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    finished_at: datetime | None = None


# ── fold ───────────────────────────────────────────────────────────────────────────────

#: The stream does not exist yet.
initial_state: Task | None = None


def evolve(state: Task | None, event: TaskEvent) -> Task | None:
    """The state after ``event``. Total and trusting: an appended event happened."""
    if isinstance(event, TaskCreated):
        return Task(event.name, event.priority, dict(event.payload), "blocked" if event.depends_on else "pending",
                    list(event.required_skills), list(event.depends_on), event.type, event.user, event.parent,
                    event.max_attempts, event.retry_backoff_seconds, event.lease_seconds, event.on_dependency_failure)
    if state is None:
        return None
    replace = msgspec.structs.replace
    match event:
        case TaskStatusChanged(to_status=to):
            return replace(state, status=to, claim=None if to not in HELD else state.claim)
        case TaskClaimed() as e:
            return replace(state, status="claimed", token=e.token, not_before=None, progress=None,
                           claim=Claim(e.node, e.token, e.expires_at, e.lease_seconds))
        case TaskStarted(expires_at=expires_at) if state.claim is not None:
            return replace(state, status="running", claim=replace(state.claim, expires_at=expires_at))
        case TaskProgressed() as e if state.claim is not None:
            return replace(state, claim=replace(state.claim, expires_at=e.expires_at),
                           progress=Progress(e.percent, e.message))
        case TaskSucceeded() as e:
            return replace(state, status="succeeded", claim=None, result=e.result, finished_at=e.at)
        case AttemptFailed() as e:
            return replace(state, status="failed" if e.final else "pending", claim=None, attempts=e.attempt,
                           not_before=e.retry_at, error=e.error or e.reason, finished_at=e.at if e.final else None)
        case TaskCancelled() as e:
            return replace(state, status="cancelled", claim=None, finished_at=e.at, error=e.reason or None)
        case TaskRetried():
            return replace(state, status="pending", attempts=0, not_before=None, error=None, finished_at=None)
        case TaskUnblocked():
            return replace(state, status="pending")
        case DependencyFailed() as e:
            return replace(state, status="failed", finished_at=e.at,
                           error=f"dependency {e.dependency} {e.dependency_status}")
    return state


# ── decisions ──────────────────────────────────────────────────────────────────────────


def decide(state: Task | None, command: TaskCommand, ctx: Context) -> list[TaskEvent] | Rejection:
    """The events ``command`` causes in ``state``, or the rule that refuses it."""
    if isinstance(command, CreateTask):
        return _create(state, command)
    if state is None:
        return Rejection("not_found", "the task does not exist; create it first with task.create")
    match command:
        case SetTaskStatus():
            return _set_status(state, command)
        case OverrideTaskStatus():
            return _override(state, command)
        case ClaimTask():
            return _claim(state, command, ctx)
        case StartTask() | ReportProgress() | CompleteTask() | FailTask():
            return _holder(state, command, ctx)
        case CancelTask():
            if state.status in FINISHED:
                return [] if state.status == "cancelled" else _finished(state, "cancel")
            return [TaskCancelled(ctx.now, command.reason)]
        case RetryTask():
            if not ctx.require("only a failed task is retried", state.status == "failed"):
                return Rejection("illegal_transition", f"only a failed task can be retried; this one is {state.status}",
                                 {"from": state.status, "to": "pending", "allowed": sorted(TRANSITIONS[state.status])})
            return [TaskRetried()]
        case ExpireClaim():
            return _expire(state, command, ctx)
        case ReleaseClaim():
            if state.claim is None or state.claim.token != command.token:
                return []  # the claim already ended: its release has nothing left to do
            return [_attempt_failed(state, command.token, command.reason, "", ctx.now)]
        case UnblockTask():
            return [TaskUnblocked()] if state.status == "blocked" else []
        case FailDependency():
            if state.status != "blocked" or state.on_dependency_failure != "fail":
                return []  # already moving on, or waits for the dependency to be retried
            return [DependencyFailed(command.dependency, command.dependency_status, ctx.now)]
    raise AssertionError(f"unhandled task command {type(command).__name__}")


def _create(state: Task | None, c: CreateTask) -> list[TaskEvent] | Rejection:
    event = TaskCreated(c.name, c.priority, dict(c.payload or {}), list(c.required_skills), list(c.depends_on),
                        c.type, c.user, c.parent, c.max_attempts, c.retry_backoff_seconds, c.lease_seconds,
                        c.on_dependency_failure)
    if state is None:
        return [event]
    # Compared as canonical JSON: Python's == says {"a": True} == {"a": 1}; JSON does not.
    ours = TaskCreated(state.name, state.priority, state.payload, state.required_skills, state.depends_on, state.type,
                       state.user, state.parent, state.max_attempts, state.retry_backoff_seconds, state.lease_seconds,
                       state.on_dependency_failure)
    if _canonical(ours) == _canonical(event):
        return []  # the same creation again: nothing new happened
    return Rejection("already_exists", "the task already exists with other fields")


def _canonical(value: Any) -> bytes:
    return msgspec.json.encode(value, order="sorted")


def _set_status(state: Task, c: SetTaskStatus) -> list[TaskEvent] | Rejection:
    if c.status == state.status:
        return []  # already there: moving again changes nothing
    allowed = SET_STATUS_TRANSITIONS.get(state.status, frozenset())
    if c.status not in allowed:
        held = ("; a claim is made, started and ended only by task.claim, task.start, task.complete and "
                "task.fail with its token, or by an operator's task.override_status"
                if HELD & {state.status, c.status} else "")
        return Rejection(
            "illegal_transition",
            f"task cannot move from {state.status} to {c.status}{held}",
            {"from": state.status, "to": c.status, "allowed": sorted(allowed)},
        )
    return [TaskStatusChanged(state.status, c.status)]


def _override(state: Task, c: OverrideTaskStatus) -> list[TaskEvent]:
    """An operator's move: any status to ``c.status``, releasing the claim (its token is recorded)."""
    if c.status == state.status and state.claim is None:
        return []  # already there, nobody holds it: nothing to override
    token = state.claim.token if state.claim is not None else None
    return [TaskStatusChanged(state.status, c.status, c.reason, token)]


def _claim(state: Task, c: ClaimTask, ctx: Context) -> list[TaskEvent] | Rejection:
    if state.claim is not None and state.claim.node == c.node and state.status in HELD:
        return []  # this node holds it already: the same claim again
    if not ctx.require("the task is pending", state.status == "pending"):
        return Rejection("not_claimable", f"the task is {state.status}, not pending", {"status": state.status})
    if not ctx.require("the retry backoff has passed", state.not_before is None or state.not_before <= ctx.now):
        return Rejection("not_due", "the task waits for its retry backoff",
                         {"not_before": state.not_before.isoformat() if state.not_before else None})
    missing = sorted(set(state.required_skills) - set(c.skills)) if c.skills is not None else []
    if not ctx.require("the node offers every required skill", not missing):
        return Rejection("skills_missing", f"the node lacks {', '.join(missing)}", {"missing": missing})
    seconds = c.lease_seconds or state.lease_seconds
    return [TaskClaimed(c.node, state.token + 1, ctx.now + timedelta(seconds=seconds), seconds)]


def _holder(state: Task, c: StartTask | ReportProgress | CompleteTask | FailTask,
            ctx: Context) -> list[TaskEvent] | Rejection:
    """A command of the claim's holder: refused with ``lease_lost`` unless ``c.token`` still holds it."""
    claim = state.claim
    if not ctx.require("the token holds the task's claim", claim is not None and claim.token == c.token
                       and state.status in HELD):
        if isinstance(c, CompleteTask) and state.status == "succeeded" and state.token == c.token:
            return []  # the same completion again
        return Rejection("lease_lost", f"token {c.token} no longer holds this task (it is {state.status}, "
                         f"token {state.token})", {"status": state.status, "token": state.token})
    assert claim is not None
    extended = ctx.now + timedelta(seconds=claim.lease_seconds)
    match c:
        case StartTask():
            return [] if state.status == "running" else [TaskStarted(c.token, extended)]
        case ReportProgress():
            return [TaskProgressed(c.token, extended, c.percent, c.message)]
        case CompleteTask():
            return [TaskSucceeded(c.token, ctx.now, c.result)]
    return [_attempt_failed(state, c.token, "reported", c.error, ctx.now, retryable=c.retryable)]


def _expire(state: Task, c: ExpireClaim, ctx: Context) -> list[TaskEvent] | Rejection:
    claim = state.claim
    if claim is None or claim.token != c.token or state.status not in HELD:
        return []  # that claim already ended
    if not ctx.require("the lease ended before the tick", claim.expires_at <= c.at):
        return Rejection("lease_not_expired", f"the lease runs until {claim.expires_at.isoformat()}",
                         {"expires_at": claim.expires_at.isoformat()})
    return [_attempt_failed(state, c.token, "lease_expired", "", c.at)]


def _attempt_failed(state: Task, token: int, reason: str, error: str, at: datetime, *,
                    retryable: bool = True) -> AttemptFailed:
    """The end of the current attempt: retried after ``backoff · 2^(attempt-1)`` while attempts remain."""
    attempt = state.attempts + 1
    final = not retryable or attempt >= state.max_attempts
    retry_at = None
    if not final:
        retry_at = at + min(timedelta(seconds=state.retry_backoff_seconds * 2 ** (attempt - 1)), MAX_BACKOFF)
    return AttemptFailed(token, reason, attempt, final, at, error, retry_at)


def _finished(state: Task, what: str) -> Rejection:
    return Rejection("task_finished", f"the task is {state.status}; nothing can {what} it", {"status": state.status})
