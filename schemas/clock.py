"""The clock of the log: ticks appended when something is due, so time-driven decisions replay the same.

A process manager decides "this lease has expired" from the last tick it read in the log, not
from its own clock; the tick is an event, so a replay of the log reaches the same decisions at the
same points. Ticks are appended on demand (when a deadline a process manager knows of has passed),
not every second, so they do not flood the log.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class Tick(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``clock.tick``: the time is ``at``; refused when ahead of the deciding owner's clock by over a few seconds."""

    at: datetime


class Ticked(msgspec.Struct, frozen=True):
    at: datetime


SYSTEM_COMMANDS = frozenset({"clock.tick"})
