"""The record of the command-results topic: what became of a command, and the refusals it carries."""

from __future__ import annotations

import msgspec

from blackboard.command_api.errors import (
    CommandError,
    IdempotencyKeyReused,
    StreamUnreadable,
    Unavailable,
)
from blackboard.schemas.api import DryRun, Outcome


class RefusalBody(msgspec.Struct, frozen=True):
    """A refusal carried to a waiter in another process: it raises the error this code names.

    Note: records written by earlier builds also hold an HTTP ``status``; it is ignored.
    """

    code: str
    message: str
    retriable: bool = False


class StoredOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """A record of the command-results topic: what became of a command.

    Every command that left no event has one (so that its ``command_id`` keeps its first outcome
    across restarts); so has every command that came through the commands topic, whoever waits
    for it, with ``commands_offset`` (its offset there: a restore resumes the topic after the
    highest one). Only ``remember`` outcomes are folded into the idempotency memory: a dry run, a
    volatile no-op or a refusal (``error``) is an answer, not a decision.
    """

    command_id: str
    stream: str
    fingerprint: str
    outcome: Outcome | DryRun | None = None
    remember: bool = True
    replayed: bool = False
    #: A refusal that is not an outcome: its code and message.
    error: RefusalBody | None = None
    commands_offset: int | None = None


def refusal_body(refusal: CommandError) -> RefusalBody:
    """What a refusal looks like in a command-results record."""
    return RefusalBody(refusal.code, refusal.message, refusal.retriable)


def answer_of(stored: StoredOutcome) -> tuple[Outcome | DryRun, bool]:
    """The answer a waiter gives its caller: the outcome, or the refusal raised as the owner raised it."""
    if stored.error is not None:
        raise refusal_of(stored.command_id, stored.error)
    if stored.outcome is None:
        raise Unavailable("the owner answered without an outcome; retry with the same command_id")
    return stored.outcome, stored.replayed


def refusal_of(command_id: str, body: RefusalBody) -> CommandError:
    """The error a stored refusal stands for."""
    if body.code == IdempotencyKeyReused.code:
        return IdempotencyKeyReused(command_id)
    if body.code == StreamUnreadable.code:
        return StreamUnreadable(body.message)
    return Unavailable(body.message, code=body.code)
