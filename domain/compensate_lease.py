"""The lease decider's compensation: a lease the run acquired and still holds is released."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blackboard.domain.lease import Lease
from blackboard.domain.rollback import Compensation, Proposal, Touch
from blackboard.schemas.lease import LeaseGranted
from blackboard.schemas.views import FieldChange


def unit_of(path: str) -> str | None:
    """The holder is what a rollback gives back; the token only grows and the expiry follows the holder."""
    return "/holder" if path == "/holder" else None


def compensate(stream: str, now: Lease | None, touches: Sequence[Touch], run_events: Sequence[Any],
               repeated: bool = False) -> Compensation:
    """``lease.release`` when the lease is still held under a grant the run received (and nobody took it since)."""
    grants = [e for e in run_events if isinstance(e, LeaseGranted)]
    if now is None or now.holder is None or not touches or not grants:
        return Compensation([], [])
    ours = {(g.holder, g.token) for g in grants}
    if (now.holder, now.token) not in ours:
        return Compensation([], [])
    release = FieldChange("/holder", "replace", now.holder, None)
    return Compensation([Proposal("release", "lease.release", {"holder": now.holder, "token": now.token},
                                  [release])], [])


class LeaseCompensator:
    """The lease's ``Compensator``: this module's functions."""

    def unit_of(self, path: str) -> str | None:
        return unit_of(path)

    def compensate(self, stream: str, now: Any, touches: Sequence[Touch], run_events: Sequence[Any],
                   repeated: bool) -> Compensation:
        return compensate(stream, now, touches, run_events, repeated)
