"""What every decider is: an initial state, ``decide`` and ``evolve``; and the registry by category."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec


class Rejection(msgspec.Struct, frozen=True):
    """A refusal by a rule: a value, not an exception. ``code`` is machine-readable."""

    code: str
    message: str
    details: dict[str, Any] = {}


class Decider(NamedTuple):
    """The three pure functions of one aggregate."""

    initial_state: Any
    decide: Callable[[Any, Any], list[Any] | Rejection]
    evolve: Callable[[Any, Any], Any]


def fold(decider: Decider, state: Any, events: Iterable[Any]) -> Any:
    """``evolve`` over ``events`` from ``state``."""
    for event in events:
        state = decider.evolve(state, event)
    return state


def _registry() -> dict[str, Decider]:
    from blackboard.command_api import project, task

    return {
        "project": Decider(project.initial_state, project.decide, project.evolve),
        "task": Decider(task.initial_state, task.decide, task.evolve),
    }


#: Deciders by stream category (``project:p-1`` → ``"project"``).
DECIDERS: dict[str, Decider] = _registry()
