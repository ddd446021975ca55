"""What every decider is: an initial state, ``decide`` and ``evolve``; and the registry by category."""

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


#: Deciders by stream category (``project:p-1`` → ``"project"``), built on first use.
DECIDERS: dict[str, Decider[Any, Any, Any]]


def __getattr__(name: str) -> dict[str, Decider[Any, Any, Any]]:
    """Build ``DECIDERS`` the first time it is asked for.

    Note: lazily, because every decider module imports ``Rejection`` from here: building the
    registry while this module loads would make ``import ...command_api.project`` circular.
    """
    if name != "DECIDERS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from blackboard.command_api import checkpoint, clock, document, lease, node, project, saga, task

    registry: dict[str, Decider[Any, Any, Any]] = {
        project.CATEGORY: Decider(project.initial_state, project.decide, project.evolve),
        task.CATEGORY: Decider(task.initial_state, task.decide, task.evolve),
        lease.CATEGORY: Decider(lease.initial_state, lease.decide, lease.evolve),
        node.CATEGORY: Decider(node.initial_state, node.decide, node.evolve),
        clock.CATEGORY: Decider(clock.initial_state, clock.decide, clock.evolve),
        saga.CATEGORY: Decider(saga.initial_state, saga.decide, saga.evolve),
        document.CATEGORY: Decider(document.initial_state, document.decide, document.evolve),
        checkpoint.CATEGORY: Decider(checkpoint.initial_state, checkpoint.decide, checkpoint.evolve),
    }
    globals()["DECIDERS"] = registry
    return registry
