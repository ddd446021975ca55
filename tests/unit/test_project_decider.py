"""The project decider: given events, when a command, then events or a rejection."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.domain import project
from blackboard.domain.decider import Context, Decider, Rejection, fold
from blackboard.domain.project_state import Budget, Project, Spec
from blackboard.domain.registry import DECIDERS
from blackboard.schemas.project import (
    AddCost,
    CostAdded,
    CreateProject,
    ProjectCommand,
    ProjectCreated,
    ProjectEvent,
    ShotUpdated,
    UpdateShot,
)

PROJECT: Decider[Project | None, ProjectCommand, ProjectEvent] = Decider(
    project.initial_state, project.decide, project.evolve)
CREATE = CreateProject("Trailer", "EUR", "100.00", {"style": "noir"})
CREATED = ProjectCreated("Trailer", "EUR", Decimal("100.00"), {"style": "noir"})

CTX = Context(datetime(2026, 1, 1, tzinfo=UTC), "tester")


def history(*events: ProjectEvent) -> Project | None:
    """The state after ``events``, from a stream that did not exist."""
    return fold(PROJECT, project.initial_state, events)


def code_of(result: list[ProjectEvent] | Rejection) -> str | None:
    return result.code if isinstance(result, Rejection) else None


# ── wiring ─────────────────────────────────────────────────────────────────────────────


def test_the_registry_holds_the_project_decider() -> None:
    assert DECIDERS["project"] == (project.initial_state, project.decide, project.evolve)


@pytest.mark.parametrize("module", ["project", "task", "decider"])
def test_each_decider_module_imports_on_its_own(module: str) -> None:
    # A fresh interpreter: in this one the registry is already built, which would hide a circular import.
    code = f"import blackboard.domain.{module} as m; from blackboard.domain.registry import DECIDERS"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


# ── creation ───────────────────────────────────────────────────────────────────────────


def test_create_a_new_project() -> None:
    state = history()
    result = project.decide(state, CREATE, CTX)
    assert result == [CREATED]


def test_a_created_project_has_spent_nothing_and_has_no_shots() -> None:
    state = history(CREATED)
    assert state == Project("Trailer", "draft", "EUR", Budget(Decimal("100.00")), Spec({"style": "noir"}))


def test_the_same_creation_again_changes_nothing() -> None:
    state = history(CREATED, CostAdded(Decimal("5"), "r"), ShotUpdated("s-1", {"a": 1}, 1))
    result = project.decide(state, CreateProject("Trailer", "EUR", "100", {"style": "noir"}), CTX)
    assert result == []


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (CreateProject("Other", "EUR", "100.00", {"style": "noir"}), "title"),
        (CreateProject("Trailer", "USD", "100.00", {"style": "noir"}), "currency"),
        (CreateProject("Trailer", "EUR", "100.01", {"style": "noir"}), "budget_total"),
        (CreateProject("Trailer", "EUR", "100.00", {"style": "pop"}), "global_spec"),
    ],
)
def test_creation_with_other_values_is_refused_naming_the_field(command: CreateProject, field: str) -> None:
    state = history(CREATED)
    result = project.decide(state, command, CTX)
    assert isinstance(result, Rejection) and (result.code, result.details) == ("already_exists", {"fields": [field]})


def test_a_spec_equal_only_to_python_is_another_spec() -> None:
    state = history(ProjectCreated("T", "EUR", Decimal(1), {"flag": True}))
    result = project.decide(state, CreateProject("T", "EUR", "1", {"flag": 1}), CTX)
    assert code_of(result) == "already_exists"


# ── missing stream ─────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("command", [AddCost("1.00", "r"), UpdateShot("s-1", {"a": 1}, 0)])
def test_a_command_on_a_missing_project_is_refused(command: ProjectCommand) -> None:
    state = history()
    result = project.decide(state, command, CTX)
    assert code_of(result) == "not_found"


# ── budget ─────────────────────────────────────────────────────────────────────────────


def test_a_cost_within_the_budget_is_added() -> None:
    state = history(CREATED)
    result = project.decide(state, AddCost("100.00", "all of it", "a-1"), CTX)
    assert result == [CostAdded(Decimal("100.00"), "all of it", "a-1")]


def test_costs_add_up() -> None:
    state = history(CREATED, CostAdded(Decimal("0.0001"), "r"), CostAdded(Decimal("12.5"), "r"))
    assert state is not None and state.budget.spent == Decimal("12.5001")


def test_a_cost_past_the_total_is_refused_with_the_figures() -> None:
    state = history(CREATED, CostAdded(Decimal("60"), "r"))
    result = project.decide(state, AddCost("40.01", "r"), CTX)
    assert result == Rejection(
        "budget_exceeded",
        "40.01 is more than what remains, 40.00 EUR (total 100.00, spent 60, reserved 0)",
        {"spent": "60", "amount": "40.01", "total": "100.00", "remaining": "40.00", "reserved": "0",
             "currency": "EUR"},
    )


def test_figures_are_never_in_exponent_notation() -> None:
    state = history(ProjectCreated("T", "EUR", Decimal("1E+2"), {}), CostAdded(Decimal("1E+1"), "r"))
    result = project.decide(state, AddCost("95", "r"), CTX)
    assert isinstance(result, Rejection) and result.details == {"spent": "10", "amount": "95", "total": "100",
                                                                "remaining": "90", "reserved": "0", "currency": "EUR"}


# ── shots ──────────────────────────────────────────────────────────────────────────────


def test_a_shot_that_does_not_exist_is_created_at_version_zero() -> None:
    state = history(CREATED)
    result = project.decide(state, UpdateShot("s-1", {"status": "draft"}, 0), CTX)
    assert result == [ShotUpdated("s-1", {"status": "draft"}, 1, "tester")]


def test_a_shot_update_is_a_merge_patch_of_its_fields() -> None:
    state = history(CREATED, ShotUpdated("s-1", {"status": "draft", "prompt": "rain", "cam": {"lens": 35}}, 1))
    after = project.evolve(state, ShotUpdated("s-1", {"prompt": None, "take": 2, "cam": {"iso": 800}}, 2))
    assert after is not None
    assert after.shots["s-1"].fields == {"status": "draft", "take": 2, "cam": {"lens": 35, "iso": 800}}
    assert after.shots["s-1"].version == 2


def test_an_update_at_the_current_version_is_the_next_version() -> None:
    state = history(CREATED, ShotUpdated("s-1", {"a": 1}, 1), ShotUpdated("s-1", {"a": 2}, 2))
    result = project.decide(state, UpdateShot("s-1", {"a": 3}, 2), CTX)
    assert result == [ShotUpdated("s-1", {"a": 3}, 3, "tester")]


@pytest.mark.parametrize("expected", [0, 2, 7])
def test_a_stale_or_future_shot_version_is_refused_naming_both_versions(expected: int) -> None:
    state = history(CREATED, ShotUpdated("s-1", {"a": 1}, 1))
    result = project.decide(state, UpdateShot("s-1", {"a": 2}, expected), CTX)
    assert result == Rejection(
        "version_conflict",
        f"shot 's-1' is at version 1, the command expected version {expected}",
        {"shot_id": "s-1", "expected_version": expected, "actual_version": 1},
    )


def test_shots_have_versions_of_their_own() -> None:
    state = history(CREATED, ShotUpdated("s-1", {"a": 1}, 1), ShotUpdated("s-1", {"a": 2}, 2))
    result = project.decide(state, UpdateShot("s-2", {"a": 1}, 0), CTX)
    assert result == [ShotUpdated("s-2", {"a": 1}, 1, "tester")]


# ── evolve is total and trusting ───────────────────────────────────────────────────────


def test_evolve_never_checks_a_rule() -> None:
    state = history(CREATED)
    after = project.evolve(state, CostAdded(Decimal("1000"), "it happened"))
    assert after is not None and after.budget.spent == Decimal("1000")


def test_evolve_of_an_event_before_creation_keeps_the_missing_state() -> None:
    assert project.evolve(None, CostAdded(Decimal("1"), "r")) is None
    assert project.evolve(None, ShotUpdated("s-1", {}, 1)) is None


def test_evolve_copies_rather_than_mutates() -> None:
    spec: dict[str, Any] = {"style": "noir"}
    before = history(ProjectCreated("T", "EUR", Decimal(1), spec), ShotUpdated("s-1", {"a": 1}, 1))
    after = project.evolve(before, ShotUpdated("s-1", {"a": 2, "b": 3}, 2))
    spec["style"] = "changed"
    assert before is not None and after is not None
    assert (before.spec.doc, before.shots["s-1"].fields, after.shots["s-1"].fields) == (
        {"style": "noir"}, {"a": 1}, {"a": 2, "b": 3})


# ── properties ─────────────────────────────────────────────────────────────────────────

MONEY = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("60"), places=4).map(lambda d: f"{d.normalize():f}")
TOTALS = st.sampled_from(["0", "50", "100.00", "99.9999"])
SHOT_IDS = st.sampled_from(["s-1", "s-2"])
PATCHES = st.dictionaries(st.sampled_from(["a", "b"]), st.none() | st.integers(0, 9), max_size=2)

# An update's expected version is drawn relative to the shot's current one, so that most are accepted.
Step = tuple[str, Any]
STEPS: st.SearchStrategy[Step] = st.one_of(
    st.tuples(st.just("create"), st.builds(CreateProject, title=st.sampled_from(["Trailer", "Teaser"]),
                                           currency=st.just("EUR"), budget_total=TOTALS)),
    st.tuples(st.just("cost"), st.builds(AddCost, amount=MONEY, reason=st.just("r"))),
    st.tuples(st.just("shot"), st.tuples(SHOT_IDS, PATCHES, st.sampled_from([0, 0, 0, -1, 1]))),
)


def command_of(step: Step, state: Project | None) -> ProjectCommand:
    kind, spec = step
    if kind != "shot":
        command: ProjectCommand = spec
        return command
    shot_id, patch, delta = spec
    shot = state.shots.get(shot_id) if state is not None else None
    return UpdateShot(shot_id, patch, max((shot.version if shot else 0) + delta, 0))


def run(steps: list[Step]) -> tuple[Project | None, list[ProjectEvent], list[ProjectCommand]]:
    """Decide each step against the state so far; the final state, the accepted events and commands."""
    state, events, accepted = project.initial_state, [], []
    for step in steps:
        command = command_of(step, state)
        result = project.decide(state, command, CTX)
        if isinstance(result, Rejection):
            continue
        state = fold(PROJECT, state, result)
        events += result
        accepted.append(command)
        assert state is None or Decimal(0) <= state.budget.spent <= state.budget.total
    return state, events, accepted


@settings(max_examples=250, deadline=None)
@given(st.lists(STEPS, max_size=30))
def test_the_budget_is_never_overspent(steps: list[Step]) -> None:
    run(steps)  # asserts after every accepted command


@settings(max_examples=200, deadline=None)
@given(st.lists(STEPS, max_size=30))
def test_folding_the_accepted_events_gives_the_final_state(steps: list[Step]) -> None:
    state, events, _ = run(steps)
    assert history(*events) == state


@settings(max_examples=200, deadline=None)
@given(st.lists(STEPS, max_size=30))
def test_an_accepted_creation_repeated_after_its_effect_yields_nothing(steps: list[Step]) -> None:
    state, _, accepted = run(steps)
    for command in accepted:
        if isinstance(command, CreateProject):
            assert project.decide(state, command, CTX) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(STEPS, max_size=30))
def test_shot_versions_go_one_two_three_without_gaps(steps: list[Step]) -> None:
    state, events, _ = run(steps)
    for shot_id in ("s-1", "s-2"):
        versions = [e.shot_version for e in events if isinstance(e, ShotUpdated) and e.shot_id == shot_id]
        assert versions == list(range(1, len(versions) + 1))
        assert state is None or (state.shots[shot_id].version if shot_id in state.shots else 0) == len(versions)
