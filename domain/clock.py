"""The clock decider: stream ``clock:<name>``; a tick moves time forward only."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from blackboard.domain.decider import Context, Rejection
from blackboard.schemas.clock import Tick, Ticked

CATEGORY = "clock"
#: How far ahead of the owner's clock a tick may be (clocks of two hosts disagree a little).
MAX_AHEAD = timedelta(seconds=5)


class Clock(msgspec.Struct, frozen=True):
    at: datetime


initial_state: Clock | None = None


def evolve(state: Clock | None, event: Ticked) -> Clock:
    return Clock(event.at)


def decide(state: Clock | None, command: Tick, ctx: Context) -> list[Ticked] | Rejection:
    """A tick later than the last one is appended; an earlier or equal one changes nothing."""
    if not ctx.require("the tick is not ahead of the owner's clock", command.at <= ctx.now + MAX_AHEAD):
        return Rejection("clock_ahead", f"tick {command.at.isoformat()} is ahead of {ctx.now.isoformat()}")
    if state is not None and command.at <= state.at:
        return []
    return [Ticked(command.at)]
