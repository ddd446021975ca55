"""What a process manager is: a fold of the events it watches, and the commands its state calls for.

Note: a command's id is a digest of the manager, the stream, the type and the payload, so the
same obligation always goes out under the same id. A manager restarted anywhere (after it sent a
command, before it saw the command's effect) sends it again, and the command side answers the
first outcome without deciding twice. Every command the managers send is also harmless when
decided after its effect already happened (an expiry of a claim that ended, an unblock of a task
no longer blocked): deciders answer those with no events.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import msgspec

#: The stream of the log's clock ticks.
CLOCK_STREAM = "clock:main"


@dataclass(frozen=True, slots=True)
class Seen:
    """An event as a manager sees it: where it is and what it says (``event`` is today's typed Struct)."""

    stream: str
    type: str
    event: Any
    event_id: str
    correlation_id: str
    occurred_at: datetime

    @property
    def ident(self) -> str:
        return self.stream.partition(":")[2]


class Intent(msgspec.Struct, frozen=True):
    """A command a manager wants sent: ``payload`` as its JSON object."""

    manager: str
    stream: str
    type: str
    payload: dict[str, Any]
    #: The event that called for it, for the causation and correlation ids of the command.
    cause_event_id: str = ""
    correlation_id: str = ""

    @property
    def command_id(self) -> str:
        canonical = msgspec.json.encode([self.stream, self.type, self.payload], order="sorted")
        return f"pm.{self.manager}:{hashlib.sha256(canonical).hexdigest()[:40]}"


def intent(manager: str, stream: str, type_: str, payload: dict[str, Any], cause: Seen | None = None) -> Intent:
    return Intent(manager, stream, type_, msgspec.to_builtins(payload),
                  cause.event_id if cause else "", cause.correlation_id if cause else "")


class ProcessManager(Protocol):
    """A process manager. Every method is pure: no I/O, no clock; time comes from the log's ticks.

    Note: ``handle`` may update ``state`` in place and return it (the runtime keeps no older
    state), which keeps a fold over millions of events linear.
    """

    name: str

    def initial(self) -> Any: ...

    def handle(self, state: Any, seen: Seen) -> tuple[Any, list[Intent]]:
        """Fold ``seen`` (an event, or a ``clock.ticked``) and answer the commands it calls for."""
        ...

    def pending(self, state: Any) -> list[Intent]:
        """Every command the state still calls for (sent once the runtime caught up, after a restart)."""
        ...

    def due(self, state: Any) -> datetime | None:
        """The earliest time a tick would call for a command (``None``: nothing is waiting for time)."""
        ...

    def rejected(self, state: Any, sent: Intent, code: str) -> list[Intent]:
        """The commands that follow when ``sent`` was refused with ``code`` (usually none)."""
        ...
