"""The task decider's compensation: a task the run created is cancelled, a task it failed goes back to pending.

A task moves only along its transitions, so "its status before the run" is reached only where a
command leads there: ``task.retry`` takes a failed task back to ``pending``, ``task.cancel`` ends a
task the run created. A task the run claimed or started is not taken from its node (no command
does): its claim runs out and it returns to ``pending`` by itself; the plan says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blackboard.domain.rollback import ABSENT, Compensation, Proposal, Touch
from blackboard.domain.task import Task
from blackboard.schemas.runs import Unrestorable
from blackboard.schemas.task import FINISHED, HELD
from blackboard.schemas.views import FieldChange

REASON = "rollback of an agent run"


def unit_of(path: str) -> str | None:
    """Only the status is put back; the claim, progress and attempts follow from it."""
    return "/status" if path == "/status" else None


def compensate(stream: str, now: Task | None, touches: Sequence[Touch], run_events: Sequence[Any],
               repeated: bool = False) -> Compensation:
    """``task.cancel`` for a task the run created, ``task.retry`` for one it made fail, else what stays."""
    if now is None or not touches:
        return Compensation([], [])
    t = touches[0]
    moved = FieldChange("/status", "replace", now.status, "cancelled" if t.before is ABSENT else t.before)
    if t.before is ABSENT and now.status not in FINISHED:
        return Compensation([Proposal("cancel", "task.cancel", {"reason": REASON}, [moved])], [])
    if t.before is not ABSENT and now.status == "failed" and t.before != "failed":
        retried = FieldChange("/status", "replace", "failed", "pending")
        return Compensation([Proposal("retry", "task.retry", {}, [retried])], [])
    if now.status in HELD and now.claim is not None:
        return Compensation([], [Unrestorable(stream, "/status", f"held by node {now.claim.node!r}: no command "
                                              f"takes it back; it returns to pending when its claim expires "
                                              f"({now.claim.expires_at.isoformat()})")])
    if now.status != t.before:
        return Compensation([], [Unrestorable(stream, "/status", f"a task cannot move from {now.status} back "
                                              f"to {'nothing' if t.before is ABSENT else t.before}")])
    return Compensation([], [])


class TaskCompensator:
    """The task's ``Compensator``: this module's functions."""

    def unit_of(self, path: str) -> str | None:
        return unit_of(path)

    def compensate(self, stream: str, now: Any, touches: Sequence[Touch], run_events: Sequence[Any],
                   repeated: bool) -> Compensation:
        return compensate(stream, now, touches, run_events, repeated)
