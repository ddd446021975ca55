"""The lease decider: stream ``lease:<name>``; one holder at a time, a fencing token that only grows.

Expiry needs no one to call anything: a lease whose ``expires_at`` has passed at the time of the
next decision is free, and that decision records it (``lease.released``, ``why: expired``) before
it grants the lease again with the next token.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from blackboard.domain.decider import Context, Rejection
from blackboard.schemas.lease import (
    AcquireLease,
    LeaseCommand,
    LeaseEvent,
    LeaseGranted,
    LeaseReleased,
    LeaseRenewed,
    ReleaseLease,
    RenewLease,
)

CATEGORY = "lease"


class Lease(msgspec.Struct, frozen=True):
    """Who holds the lease (``None``: free) until when, and the last token granted."""

    holder: str | None
    token: int
    expires_at: datetime | None


#: No grant yet: the first one carries token 1.
initial_state = Lease(None, 0, None)


def evolve(state: Lease, event: LeaseEvent) -> Lease:
    """The state after ``event``. Total and trusting: an appended event happened."""
    match event:
        case LeaseGranted(holder, token, expires_at) | LeaseRenewed(holder, token, expires_at):
            return Lease(holder, token, expires_at)
        case LeaseReleased():
            return Lease(None, state.token, None)
    return state


def held_by(state: Lease, now: datetime) -> str | None:
    """The holder at ``now``: ``None`` when free or expired."""
    if state.holder is None or state.expires_at is None or state.expires_at <= now:
        return None
    return state.holder


def decide(state: Lease, command: LeaseCommand, ctx: Context) -> list[LeaseEvent] | Rejection:
    """The events ``command`` causes at ``ctx.now``, or the rule that refuses it."""
    expired: list[LeaseEvent] = []
    if state.holder is not None and held_by(state, ctx.now) is None:
        expired = [LeaseReleased(state.holder, state.token, "expired")]
        state = evolve(state, expired[0])
    match command:
        case AcquireLease(holder, ttl):
            result = _acquire(state, holder, ctx.now + timedelta(seconds=ttl), ctx)
        case RenewLease(holder, token, ttl):
            result = _renew(state, holder, token, ctx.now + timedelta(seconds=ttl), ctx)
        case ReleaseLease(holder, token):
            result = _release(state, holder, token, ctx)
    if isinstance(result, Rejection):
        return result
    return [*expired, *result]


def _acquire(state: Lease, holder: str, until: datetime, ctx: Context) -> list[LeaseEvent] | Rejection:
    if state.holder == holder:
        return [LeaseRenewed(holder, state.token, until)]  # acquiring again extends, same token
    if not ctx.require("the lease is free", state.holder is None):
        assert state.expires_at is not None
        return Rejection("lease_held", f"the lease is held by {state.holder!r} until {state.expires_at.isoformat()}",
                         {"holder": state.holder, "token": state.token, "expires_at": state.expires_at.isoformat()})
    return [LeaseGranted(holder, state.token + 1, until)]


def _renew(state: Lease, holder: str, token: int, until: datetime, ctx: Context) -> list[LeaseEvent] | Rejection:
    if not ctx.require("the holder still holds the lease with this token",
                       state.holder == holder and state.token == token):
        return _lost(state, holder, token)
    return [LeaseRenewed(holder, token, until)]


def _release(state: Lease, holder: str, token: int, ctx: Context) -> list[LeaseEvent] | Rejection:
    if state.holder is None and token <= state.token:
        return []  # already free (released before, or expired): releasing again changes nothing
    if not ctx.require("the holder still holds the lease with this token",
                       state.holder == holder and state.token == token):
        return _lost(state, holder, token)
    return [LeaseReleased(holder, token, "released")]


def _lost(state: Lease, holder: str, token: int) -> Rejection:
    return Rejection(
        "lease_lost", f"{holder!r} does not hold the lease with token {token}: it expired or was granted again",
        {"holder": state.holder, "token": state.token,
         "expires_at": state.expires_at.isoformat() if state.expires_at else None},
    )
