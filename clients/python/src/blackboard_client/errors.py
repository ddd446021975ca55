"""What the client raises: a rule's refusal, an HTTP error with its code, an unreachable server, a full spool."""

from __future__ import annotations

from typing import Any


class BlackboardError(Exception):
    """Base of every error this client raises."""


class Rejected(BlackboardError):
    """A rule refused the command (HTTP 409): nothing was appended. ``details`` are the rule's own."""

    def __init__(self, code: str, message: str, command_id: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.command_id = code, message, command_id
        self.details = details or {}


class ApiError(BlackboardError):
    """An HTTP error answered with a problem document (RFC 9457, ``application/problem+json``): ``status``,
    the machine-readable ``code``, ``message`` (the problem's ``detail``), per-field ``errors`` (each
    ``{"path", "message"}``), and the problem's ``type``, ``title`` and ``instance`` (the request's path).

    Note: a retryable status (429, 502, 503, 504) is only raised once the client's deadline ran out.
    """

    def __init__(self, status: int, code: str, message: str, errors: list[dict[str, Any]] | None = None, *,
                 type: str | None = None, title: str | None = None, instance: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.errors = errors or []
        self.type, self.title, self.instance = type or "about:blank", title or "", instance

    @property
    def detail(self) -> str:
        """The problem's ``detail``: what went wrong with this request (the same text as ``message``)."""
        return self.message

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later can help."""
        return self.status in RETRYABLE_STATUSES


class Unreachable(BlackboardError):
    """No answer from the server within the deadline (connection refused, reset or timed out)."""


class SpoolFull(BlackboardError):
    """The offline spool holds as many commands (or bytes) as it may; the command was not stored.

    Nothing already spooled is dropped: deliver them (``flush``) or raise the spool's bounds.
    """

    def __init__(self, count: int, size: int, max_count: int, max_bytes: int) -> None:
        super().__init__(f"the spool holds {count} commands ({size} bytes); its bounds are {max_count} commands "
                         f"and {max_bytes} bytes")
        self.count, self.size, self.max_count, self.max_bytes = count, size, max_count, max_bytes


class SpoolInUse(BlackboardError):
    """Another client (in this or another process) has the spool open: one spool, one client at a time."""


class LeaseLost(BlackboardError):
    """The lease (or a task's claim) is no longer ours: stop acting under its token."""


#: Statuses after which the same request may succeed later.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
