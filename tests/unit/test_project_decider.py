"""The project decider: given events, when a command, then events or a rejection."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.command_api.decider import DECIDERS, Rejection, fold
from blackboard.command_api.project import Project
from blackboard.schemas.project import AddCost, CostAdded, CreateProject, ProjectCreated, ShotUpdated, UpdateShot

PROJECT = DECIDERS["project"]
CREATED = ProjectCreated("Trailer", "EUR", Decimal("100.00"), {"style": "noir"})


def given_(*events: Any) -> Project | None:
    state: Project | None = fold(PROJECT, PROJECT.initial_state, events)
    return state


def test_create_a_new_project() -> None:
    assert PROJECT.decide(given_(), CreateProject("Trailer", "EUR", "100.00", {"style": "noir"})) == [CREATED]


def test_the_same_creation_again_changes_nothing() -> None:
    state = given_(CREATED, CostAdded(Decimal("5"), "r"))
    assert PROJECT.decide(state, CreateProject("Trailer", "EUR", "100.00", {"style": "noir"})) == []


def test_creation_with_other_values_is_refused() -> None:
    result = PROJECT.decide(given_(CREATED), CreateProject("Other", "EUR", "100.00"))
    assert isinstance(result, Rejection) and result.code == "already_exists"


def test_a_cost_on_a_missing_project_is_refused() -> None:
    result = PROJECT.decide(given_(), AddCost("1.00", "r"))
    assert isinstance(result, Rejection) and result.code == "not_found"


def test_a_cost_within_the_budget_is_added() -> None:
    assert PROJECT.decide(given_(CREATED), AddCost("100.00", "all of it", "a-1")) == [
        CostAdded(Decimal("100.00"), "all of it", "a-1")]


def test_a_cost_past_the_total_is_refused_with_the_figures() -> None:
    result = PROJECT.decide(given_(CREATED, CostAdded(Decimal("60"), "r")), AddCost("40.01", "r"))
    assert isinstance(result, Rejection) and result.code == "budget_exceeded"
    assert result.details == {"spent": "60", "amount": "40.01", "total": "100.00", "remaining": "40.00"}


def test_a_shot_is_created_at_version_zero_and_patched() -> None:
    state = given_(CREATED, ShotUpdated("s-1", {"status": "draft", "prompt": "rain"}, 1))
    assert PROJECT.decide(state, UpdateShot("s-1", {"prompt": None, "take": 2}, 1)) == [
        ShotUpdated("s-1", {"prompt": None, "take": 2}, 2)]
    after = given_(CREATED, ShotUpdated("s-1", {"status": "draft", "prompt": "rain"}, 1),
                   ShotUpdated("s-1", {"prompt": None, "take": 2}, 2))
    assert after is not None and after.shots["s-1"].fields == {"status": "draft", "take": 2}


def test_a_stale_shot_version_is_refused_naming_both_versions() -> None:
    result = PROJECT.decide(given_(CREATED, ShotUpdated("s-1", {"a": 1}, 1)), UpdateShot("s-1", {"a": 2}, 0))
    assert isinstance(result, Rejection) and result.code == "version_conflict"
    assert result.details == {"shot_id": "s-1", "expected_version": 0, "actual_version": 1}


# ── properties ─────────────────────────────────────────────────────────────────────────

money = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("80"), places=4).map(lambda d: f"{d:f}")
commands = st.one_of(
    st.builds(AddCost, amount=money, reason=st.just("r")),
    st.builds(UpdateShot, shot_id=st.sampled_from(["s-1", "s-2"]),
              patch=st.dictionaries(st.sampled_from(["a", "b"]), st.none() | st.integers(0, 9), max_size=2),
              expected_version=st.integers(0, 4)),
    st.builds(CreateProject, title=st.just("Trailer"), currency=st.just("EUR"),
              budget_total=st.sampled_from(["100.00", "50"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=40))
def test_decisions_keep_every_invariant(cmds: list[Any]) -> None:
    state: Project | None = given_(CREATED)
    accepted: list[Any] = [CREATED]
    for command in cmds:
        result = PROJECT.decide(state, command)
        if isinstance(result, Rejection):
            continue
        for event in result:
            state = PROJECT.evolve(state, event)
        accepted += result
        assert state is not None and Decimal(0) <= state.spent <= state.budget_total
        if isinstance(command, CreateProject):
            assert PROJECT.decide(state, command) == []  # idempotent by construction
    assert given_(*accepted) == state
    for shot_id in ("s-1", "s-2"):
        versions = [e.shot_version for e in accepted if isinstance(e, ShotUpdated) and e.shot_id == shot_id]
        assert versions == list(range(1, len(versions) + 1))
