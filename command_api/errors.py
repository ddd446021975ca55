"""Why the command side did not decide a command: its own errors, with a code and whether a retry can help.

These are not outcomes (a rule's refusal is a ``Rejected`` outcome, from ``domain.decider.Rejection``)
and they know no transport: the HTTP routes map them to a status in ``command_api.http_errors``.
"""

from __future__ import annotations


class CommandError(Exception):
    """A command that was not decided. ``code`` is machine-readable; ``retriable`` says whether sending the
    same command with the same ``command_id`` again can succeed (it is decided at most once)."""

    code = "unavailable"
    retriable = True

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class Unavailable(CommandError):
    """The log did not acknowledge, or a bounded wait ran out (``log_unavailable``, ``route_timeout``, …)."""


class NotOwner(CommandError):
    """This process does not (or no longer) decide the command's partition: retry, it goes to the owner."""

    code = "not_owner"


class StreamUnreadable(CommandError):
    """The stream has a record this build cannot fold: deciding would build on a hole.

    Note: retriable in the sense that a build that reads the record decides the command; this one never will.
    """

    code = "stream_unreadable"


class IdempotencyKeyReused(CommandError):
    """The ``command_id`` was first used for a different command."""

    code = "idempotency_key_reused"
    retriable = False

    def __init__(self, command_id: str) -> None:
        super().__init__(f"command_id {command_id!r} was already used for a different command")
        self.command_id = command_id


class NodeNotFound(CommandError):
    """A claim names a node that never registered."""

    code = "node_not_found"
    retriable = False


class NodeUnavailable(CommandError):
    """A claim names a node that is offline or deregistered (``node_offline``, ``node_deregistered``)."""

    code = "node_unavailable"
    retriable = False


#: Answers that are not outcomes, found while deciding: raised to the caller, never remembered.
Refusal = IdempotencyKeyReused | StreamUnreadable
