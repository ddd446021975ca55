"""Rollback of a run, as pure deciders: random runs interleaved with another writer over random states.

After the run's rollback, every field only the run touched is back to its value before the run, the
money is what the other writer alone would have left, and planning again proposes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.domain import compensate_project as cp
from blackboard.domain.compensators import plan_run
from blackboard.domain.decider import Context, Rejection
from blackboard.domain.registry import DECIDERS
from blackboard.domain.rollback import Role, Step, builtins, lookup
from blackboard.schemas.changes import diff
from blackboard.schemas.project import (
    AddCost,
    CommitReservation,
    CostAdded,
    CreateProject,
    CreateShot,
    PatchSpec,
    PutDnaEntry,
    RemoveDnaEntry,
    ReserveBudget,
    UpdateShot,
)
from blackboard.schemas.project import (
    ReservationCommitted as Committed,
)
from blackboard.schemas.registry import COMMAND_TYPES

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROJECT = DECIDERS["project"]
STREAM = "project:p-1"
SHOTS = ["s-1", "s-2", "s-3"]
NAMES = ["a", "b", "c"]
KEYS = ["k-1", "k-2"]

values = st.one_of(st.integers(0, 3), st.sampled_from(["x", "y"]), st.just(None),
                   st.dictionaries(st.sampled_from(["u", "v"]), st.integers(0, 2), max_size=2))


@st.composite
def intents(draw: st.DrawFn) -> tuple[str, Any]:
    """A command as a function of the state it is decided in (versions are read from it)."""
    kind = draw(st.sampled_from(["shot", "shot", "cost", "reserve", "commit", "dna", "undna", "spec"]))
    shot, key = draw(st.sampled_from(SHOTS)), draw(st.sampled_from(KEYS))
    patch = draw(st.dictionaries(st.sampled_from(NAMES), values, min_size=1, max_size=3))
    amount = str(draw(st.integers(1, 40)))
    n = draw(st.integers(0, 3))
    dna_value = draw(st.dictionaries(st.sampled_from(["hair", "eyes"]), st.sampled_from(["red", "blue"]),
                                     min_size=1))
    return kind, {"shot": shot, "key": key, "patch": patch, "amount": amount, "n": n, "dna": dna_value}


def command_of(kind: str, a: dict[str, Any], state: Any, who: str) -> Any:
    if kind == "shot":
        return UpdateShot(a["shot"], a["patch"], state.shots[a["shot"]].version)
    if kind == "cost":
        return AddCost(a["amount"], "r")
    if kind == "reserve":
        return ReserveBudget(f"{who}-r{a['n']}", a["amount"], "r")
    if kind == "commit":
        return CommitReservation(f"{who}-r{a['n']}")
    entry = state.dna.get(a["key"])
    version = entry.version if entry else 0
    if kind == "dna":
        return PutDnaEntry(a["key"], a["dna"], version)
    if kind == "undna":
        return RemoveDnaEntry(a["key"], version)
    return PatchSpec({a["patch"] and next(iter(a["patch"])): a["n"]}, state.spec.version)


def decide(state: Any, command: Any, actor: str) -> tuple[Any, list[Any]]:
    result = PROJECT.decide(state, command, Context(T0, actor))
    if isinstance(result, Rejection):
        return state, []
    for event in result:
        state = PROJECT.evolve(state, event)
    return state, result


def base() -> tuple[Any, list[Step]]:
    state, steps = None, []
    setup = [CreateProject("T", "EUR", "1000", {"a": 1}), *[CreateShot(s, {"a": 0}) for s in SHOTS],
             PutDnaEntry("k-1", {"hair": "black"}, 0)]
    for command in setup:
        state, events = decide(state, command, "setup")
        steps += [Step(e, "setup", "other") for e in events]
    return state, steps


def spending(steps: list[Step], role: Role) -> Decimal:
    return sum((e.event.amount for e in steps if e.role == role and isinstance(e.event, CostAdded | Committed)),
               Decimal(0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), intents()), min_size=1, max_size=25))
def test_rollback_returns_every_field_only_the_run_touched(script: list[tuple[bool, tuple[str, Any]]]) -> None:
    state, steps = base()
    for by_run, (kind, args) in script:
        who, role = ("run", "run") if by_run else ("other", "other")
        state, events = decide(state, command_of(kind, args, state, who), who)
        steps += [Step(e, who, role) for e in events]  # type: ignore[arg-type]

    # The units the run touched, their value before it, and whether the other writer touched them later.
    expected: dict[str, Any] = {}
    spoiled: set[str] = set()
    replay = PROJECT.initial_state
    for s in steps:
        before = builtins(replay)
        replay = PROJECT.evolve(replay, s.event)
        units = {u for c in diff(before, builtins(replay)) if (u := cp.unit_of(c.path)) is not None}
        for unit in units:
            if s.role == "run":
                expected.setdefault(unit, lookup(before, unit))
            elif unit in expected:
                spoiled.add(unit)
    other_spent = spending(steps, "other")

    plan = plan_run("run", {STREAM: steps}, dry_run=False)
    for planned in plan.commands:
        command = msgspec.convert(planned.payload, COMMAND_TYPES[planned.type][1])
        state, events = decide(state, command, "rollback")
        steps += [Step(e, "rollback", "rollback") for e in events]

    now = builtins(state)
    for unit, before in expected.items():
        if unit not in spoiled and not unit.startswith("/dna/"):
            assert lookup(now, unit) == before, (unit, plan)
        elif unit not in spoiled:  # a DNA entry's version grows: its value is what comes back
            assert (lookup(now, unit) or {}).get("value") == (before or {}).get("value"), (unit, plan)
    assert state.budget.spent == other_spent
    assert all(not rid.startswith("run-") for rid in state.reservations)
    assert plan_run("run", {STREAM: steps}).commands == []  # a repeated rollback proposes nothing
