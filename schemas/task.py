"""Task commands and events: creation, claims with a lease and a fencing token, retries, dependencies.

A task's life: ``blocked`` (waiting for its dependencies) → ``pending`` → ``claimed`` by a node
(with a lease and a fencing token) → ``running`` → ``succeeded``, or back to ``pending`` when an
attempt fails (reported, lease expired, node offline) while attempts remain, else ``failed``.
``cancelled`` ends it from any state that has not ended. Every command a worker sends about its
claim carries the token; an older token is refused (``lease_lost``), so a worker that paused past
its lease cannot complete a task someone else now holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from blackboard.schemas.project import TtlSeconds
from blackboard.schemas.types import Identifier, Priority, ShortText, Skill

FencingToken = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
#: Attempts a task gets before it fails for good.
Attempts = Annotated[int, msgspec.Meta(ge=1, le=100)]
BackoffSeconds = Annotated[float, msgspec.Meta(ge=0, le=86_400)]
Percent = Annotated[float, msgspec.Meta(ge=0, le=100)]
#: What a dependant does when a dependency fails or is cancelled.
OnDependencyFailure = Literal["fail", "block"]

TaskStatus = Literal["blocked", "pending", "claimed", "running", "succeeded", "failed", "cancelled"]
#: Statuses a task never leaves by itself (``failed`` may be retried by an operator).
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
#: Statuses in which a node holds the task.
HELD = frozenset({"claimed", "running"})

#: The moves a task's status makes over its life; anything else is refused with ``illegal_transition``.
#: ``blocked`` is left by ``task.unblock`` (when every dependency succeeded) or ``task.cancel``, never by a
#: status set by hand. Moves into and out of ``claimed`` and ``running`` are made only by the claim's commands
#: (``task.claim``, then ``task.start``/``task.complete``/``task.fail`` with its fencing token), by the process
#: managers, or by an operator's ``task.override_status``: see ``SET_STATUS_TRANSITIONS``.
TRANSITIONS: dict[str, frozenset[str]] = {
    "blocked": frozenset(),
    "pending": frozenset({"claimed"}),
    "claimed": frozenset({"running"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
    "failed": frozenset({"pending"}),
    "succeeded": frozenset(),
    "cancelled": frozenset(),
}

#: The moves ``task.set_status`` may make: those of ``TRANSITIONS`` that neither enter nor leave a held
#: status. A status set by hand must not make a claim without a holder, nor end one without its token.
SET_STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    frm: frozenset() if frm in HELD else frozenset(to for to in targets if to not in HELD)
    for frm, targets in TRANSITIONS.items()
}


#: Most skills one task may require, and most tasks it may depend on.
MAX_SKILLS = 32
MAX_DEPENDENCIES = 64


class CreateTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.create``: a new task, ``pending``.

    ``required_skills`` are what a worker must offer to claim it; ``depends_on`` names other
    tasks by id (a task naming itself is refused by the command validation, which knows the stream).

    Note: ``payload`` ``null`` is still accepted and means ``{}``, as clients sent it before version 2.
    """

    name: ShortText
    priority: Priority = 0
    payload: dict[str, Any] | None = None
    required_skills: Annotated[list[Skill], msgspec.Meta(max_length=MAX_SKILLS)] = []
    depends_on: Annotated[list[Identifier], msgspec.Meta(max_length=MAX_DEPENDENCIES)] = []
    #: What kind of work it is ("render", "review"): for lists and statistics.
    type: Identifier = "default"
    #: Who the task is for (the user or owner of the work).
    user: Identifier | None = None
    #: The task this one is a subtask of.
    parent: Identifier | None = None
    max_attempts: Attempts = 3
    #: Seconds before the first retry; each further retry waits twice as long (at most an hour).
    retry_backoff_seconds: BackoffSeconds = 5.0
    #: The lease a claim gets unless the claim asks for another.
    lease_seconds: TtlSeconds = 30
    on_dependency_failure: OnDependencyFailure = "fail"

    def __post_init__(self) -> None:
        for field, values in (("required_skills", self.required_skills), ("depends_on", self.depends_on)):
            repeated = _repeated(values)
            if repeated is not None:
                raise ValueError(f"{field} lists {repeated!r} more than once")


def _repeated(values: Sequence[str]) -> str | None:
    """The first value of ``values`` seen twice, or ``None``."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


class SetTaskStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.set_status``: move along ``SET_STATUS_TRANSITIONS`` (never into or out of a held status)."""

    status: TaskStatus


#: Where an operator's ``task.override_status`` may put a task: never into a held status (no claim, no holder),
#: nor ``blocked`` (which only a task with dependencies leaves by itself).
OverrideStatus = Literal["pending", "succeeded", "failed", "cancelled"]


class OverrideTaskStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.override_status``: an operator puts the task in ``status`` whatever it is, ending any claim.

    A system command (an API key of mode ``sys``); ``reason`` is required and recorded in the event, with
    the token of the claim it released, so the log says who overrode what and why.
    """

    status: OverrideStatus
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class TaskCreated(msgspec.Struct, frozen=True):
    """``task.created``, schema version 2: version 1 plus skills and dependencies, ``payload`` never null."""

    name: str
    priority: int = 0
    payload: dict[str, Any] = {}
    required_skills: list[str] = []
    depends_on: list[str] = []
    # Added later with defaults: a version 2 payload without them still decodes.
    type: str = "default"
    user: str | None = None
    parent: str | None = None
    max_attempts: int = 3
    retry_backoff_seconds: float = 5.0
    lease_seconds: int = 30
    on_dependency_failure: str = "fail"


class TaskCreatedV1(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.created`` as schema version 1 wrote it; kept to document (and test) the upcaster's input."""

    name: str
    priority: int = 0
    payload: dict[str, Any] | None = None


def upcast_task_created_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """A version 1 ``task.created`` object as version 2: ``payload`` null → ``{}``, no skills, no dependencies.

    Note: pure and given JSON objects, not Structs, so that it runs before today's Struct validates.
    """
    payload = obj.get("payload")
    return {**obj, "payload": {} if payload is None else payload, "required_skills": [], "depends_on": []}


class TaskStatusChanged(msgspec.Struct, frozen=True):
    """A status set by hand (``task.set_status``) or overridden (``task.override_status``: with its ``reason``
    and the token of the claim it released, if any). Fields added with defaults: older payloads still decode."""

    from_status: str
    to_status: str
    reason: str = ""
    released_token: int | None = None


# ── claims and attempts ─────────────────────────────────────────────────────────────────


class ClaimTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.claim``: ``node`` takes the task, if it is ``pending``, due, and ``skills`` cover what it requires.

    The claim is a lease of ``lease_seconds`` (default: the task's own) with a fencing token one
    above the last; ``task.start``/``task.progress`` extend it.
    """

    node: Identifier
    skills: Annotated[list[Skill], msgspec.Meta(max_length=256)] | None = None
    lease_seconds: TtlSeconds | None = None


class StartTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.start``: the holder of ``token`` begins the work (``claimed`` → ``running``)."""

    token: FencingToken


class ReportProgress(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.progress``: the holder reports how far it is; the lease is extended by its length."""

    token: FencingToken
    percent: Percent | None = None
    message: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class CompleteTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.complete``: the holder of ``token`` succeeded, with an optional ``result``."""

    token: FencingToken
    result: dict[str, Any] | None = None


class FailTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.fail``: the holder's attempt failed; retried after a backoff while attempts remain (and
    ``retryable``), else the task fails."""

    token: FencingToken
    error: ShortText
    retryable: bool = True


class CancelTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.cancel``: end a task that has not ended; a holder's token is lost with it."""

    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class RetryTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.retry``: an operator gives a ``failed`` task a fresh set of attempts."""


class ExpireClaim(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.expire_claim``: the claim of ``token`` ended without progress by ``at``.

    Sent by the lease process manager on a clock tick of the log: ``at`` is that tick's time, so the
    decision depends on the log, not on a clock read while deciding.
    """

    token: FencingToken
    at: datetime


class ReleaseClaim(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.release_claim``: the holder of ``token`` went away (its node went offline or deregistered)."""

    token: FencingToken
    reason: Literal["node_offline", "node_deregistered"]


class UnblockTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.unblock``: every dependency succeeded; a ``blocked`` task becomes ``pending``."""


class FailDependency(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``task.fail_dependency``: ``dependency`` ended without success; a ``blocked`` task that fails with its
    dependencies (``on_dependency_failure: fail``) fails too."""

    dependency: Identifier
    dependency_status: Literal["failed", "cancelled"]


class Progress(msgspec.Struct, frozen=True):
    percent: float | None = None
    message: str | None = None


class TaskClaimed(msgspec.Struct, frozen=True):
    node: str
    token: int
    expires_at: datetime
    lease_seconds: int


class TaskStarted(msgspec.Struct, frozen=True):
    token: int
    expires_at: datetime


class TaskProgressed(msgspec.Struct, frozen=True):
    token: int
    expires_at: datetime
    percent: float | None = None
    message: str | None = None


class TaskSucceeded(msgspec.Struct, frozen=True):
    token: int
    at: datetime
    result: dict[str, Any] | None = None


class AttemptFailed(msgspec.Struct, frozen=True):
    """One attempt ended without success: the task is ``pending`` again after ``retry_at``, or ``failed``
    when ``final``. ``reason``: ``reported``, ``lease_expired``, ``node_offline``, ``node_deregistered``."""

    token: int
    reason: str
    attempt: int
    final: bool
    at: datetime
    error: str = ""
    retry_at: datetime | None = None


class TaskCancelled(msgspec.Struct, frozen=True):
    at: datetime
    reason: str = ""


class TaskRetried(msgspec.Struct, frozen=True):
    """An operator gave a failed task its attempts again."""


class TaskUnblocked(msgspec.Struct, frozen=True):
    """Every dependency succeeded."""


class DependencyFailed(msgspec.Struct, frozen=True):
    dependency: str
    dependency_status: str
    at: datetime


TaskCommand = (CreateTask | SetTaskStatus | OverrideTaskStatus | ClaimTask | StartTask | ReportProgress
               | CompleteTask | FailTask | CancelTask | RetryTask | ExpireClaim | ReleaseClaim | UnblockTask
               | FailDependency)
TaskEvent = (TaskCreated | TaskStatusChanged | TaskClaimed | TaskStarted | TaskProgressed | TaskSucceeded
             | AttemptFailed | TaskCancelled | TaskRetried | TaskUnblocked | DependencyFailed)

#: Commands only the process managers send (an API key needs the ``sys`` mode to send them).
#: ``task.override_status`` is an operator's: it is kept from read-write keys for the same reason.
SYSTEM_COMMANDS = frozenset({"task.expire_claim", "task.release_claim", "task.unblock", "task.fail_dependency",
                             "task.override_status"})
