"""What every decider is: an initial state, ``decide`` and ``evolve``, a refusal, a decision's context, and the fold.

The registry of deciders by category is ``blackboard.domain.registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")


class Rejection(msgspec.Struct, frozen=True):
    """A refusal by a rule: a value, not an exception. ``code`` is machine-readable."""

    code: str
    message: str
    details: dict[str, Any] = {}


class Check(msgspec.Struct, frozen=True):
    """A rule a decision checked, and whether the command passed it."""

    rule: str
    passed: bool


@dataclass(slots=True)
class Context:
    """What a decision may know besides state and command: when it is made and by whom.

    Note: ``now`` is the owner's clock read once per command and written into the events it causes
    (as ``occurred_at``, and as expiry times in their payloads), so the log holds every time a
    decision used: ``evolve`` never needs a clock, and a replay folds to the same state.
    ``checks`` collects the rules the decision checked, for a dry run to show.
    """

    now: datetime
    actor: str
    checks: list[Check] = field(default_factory=list)
    #: The stream decided on (``doc:reviews.r-1``): for deciders whose rules depend on the stream's id.
    stream: str = ""

    def require(self, rule: str, passed: bool) -> bool:
        """Record that ``rule`` was checked, and return whether it held."""
        self.checks.append(Check(rule, passed))
        return passed


class Decider(NamedTuple, Generic[S, C, E]):
    """The three pure functions of one aggregate, over state ``S``, commands ``C`` and events ``E``."""

    initial_state: S
    decide: Callable[[S, C, Context], list[E] | Rejection]
    evolve: Callable[[S, E], S]


def fold(decider: Decider[S, C, E], state: S, events: Iterable[E]) -> S:
    """``evolve`` over ``events``, starting from ``state``."""
    for event in events:
        state = decider.evolve(state, event)
    return state
