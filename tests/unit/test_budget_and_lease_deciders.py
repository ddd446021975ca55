"""The budget with reservations and the lease, as pure deciders: examples and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.domain import lease, project
from blackboard.domain.decider import Context, Decider, Rejection, fold
from blackboard.schemas.lease import AcquireLease, LeaseGranted, LeaseReleased, ReleaseLease, RenewLease
from blackboard.schemas.project import (
    AddCost,
    CommitReservation,
    CreateProject,
    CreateShot,
    ExpireReservations,
    RegisterArtifact,
    ReleaseReservation,
    ReservationReleased,
    ReserveBudget,
    SetBudgetTotal,
    SetProjectStatus,
    UpdateShot,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROJECT: Decider[Any, Any, Any] = Decider(project.initial_state, project.decide, project.evolve)
LEASE: Decider[Any, Any, Any] = Decider(lease.initial_state, lease.decide, lease.evolve)


def at(seconds: float, actor: str = "agent") -> Context:
    return Context(T0 + timedelta(seconds=seconds), actor)


def step(decider: Decider[Any, Any, Any], state: Any, command: Any, ctx: Context) -> tuple[Any, Any]:
    result = decider.decide(state, command, ctx)
    return (state if isinstance(result, Rejection) else fold(decider, state, result)), result


def created(total: str = "100") -> Any:
    state, _ = step(PROJECT, None, CreateProject("T", "EUR", total), at(0))
    return state


# ── examples ───────────────────────────────────────────────────────────────────────────


def test_an_expired_reservation_is_released_before_the_next_budget_decision() -> None:
    state, _ = step(PROJECT, created(), ReserveBudget("r-1", "80", "render", ttl_seconds=10), at(0))
    refused = PROJECT.decide(state, AddCost("30", "x"), at(9))
    assert isinstance(refused, Rejection) and refused.code == "budget_exceeded"
    events = PROJECT.decide(state, AddCost("30", "x"), at(10))
    assert not isinstance(events, Rejection)
    assert [type(e).__name__ for e in events] == ["ReservationReleased", "CostAdded"]
    assert events[0] == ReservationReleased("r-1", Decimal(80), "expired")


def test_expire_reservations_alone_releases_only_what_is_due() -> None:
    state, _ = step(PROJECT, created(), ReserveBudget("r-1", "10", "a", ttl_seconds=5), at(0))
    state, _ = step(PROJECT, state, ReserveBudget("r-2", "10", "b", ttl_seconds=50), at(0))
    assert PROJECT.decide(state, ExpireReservations(), at(4)) == []
    after, events = step(PROJECT, state, ExpireReservations(), at(5))
    assert [e.reservation_id for e in events] == ["r-1"] and list(after.reservations) == ["r-2"]


def test_a_failed_precondition_names_the_field_its_value_and_who_set_it() -> None:
    state, _ = step(PROJECT, created(), CreateShot("s-1", {"status": "review"}), at(0, "director"))
    state, _ = step(PROJECT, state, UpdateShot("s-1", {"status": "approved"}, preconditions={"status": "review"}),
                    at(1, "qa-agent"))
    refused = PROJECT.decide(state, UpdateShot("s-1", {"status": "rejected"}, preconditions={"status": "review"}),
                             at(2, "late-agent"))
    assert isinstance(refused, Rejection) and refused.code == "precondition_failed"
    assert (refused.details["actual"], refused.details["set_by"], refused.details["set_at_version"]) == (
        "approved", "qa-agent", 2)
    # A precondition on another field does not collide.
    ok = PROJECT.decide(state, UpdateShot("s-1", {"prompt": "rain"}, preconditions={"prompt": None}), at(3))
    assert not isinstance(ok, Rejection)


def test_an_artifact_past_the_budget_appends_nothing_and_one_within_it_charges_atomically() -> None:
    state = created("10")
    refused = PROJECT.decide(state, RegisterArtifact("a-1", "video", "s3://b/k", cost="10.01"), at(1))
    assert isinstance(refused, Rejection) and refused.code == "budget_exceeded"
    after, events = step(PROJECT, state, RegisterArtifact("a-1", "video", "s3://b/k", cost="10"), at(1))
    assert [type(e).__name__ for e in events] == ["ArtifactRegistered", "CostAdded"]
    assert after.budget.spent == 10 and "a-1" in after.artifacts


def test_an_archived_project_refuses_everything() -> None:
    state, _ = step(PROJECT, created(), SetProjectStatus("archived"), at(1))
    refused = PROJECT.decide(state, CreateShot("s-1"), at(2))
    assert isinstance(refused, Rejection) and refused.code == "project_archived"


def test_a_lease_is_free_once_its_time_is_up_and_the_next_grant_has_the_next_token() -> None:
    state, _ = step(LEASE, lease.initial_state, AcquireLease("a", 10), at(0))
    assert isinstance(LEASE.decide(state, AcquireLease("b", 10), at(9.9)), Rejection)
    events = LEASE.decide(state, AcquireLease("b", 10), at(10))
    assert events == [LeaseReleased("a", 1, "expired"), LeaseGranted("b", 2, T0 + timedelta(seconds=20))]
    late = LEASE.decide(fold(LEASE, state, events), RenewLease("a", 1, 10), at(11))
    assert isinstance(late, Rejection) and late.code == "lease_lost"


# ── properties ─────────────────────────────────────────────────────────────────────────

MONEY = st.integers(1, 6000).map(lambda c: str(Decimal(c) / 100))
RIDS = st.sampled_from(["r-1", "r-2", "r-3"])
BUDGET_COMMANDS = st.one_of(
    st.builds(AddCost, amount=MONEY, reason=st.just("r")),
    st.builds(ReserveBudget, reservation_id=RIDS, amount=MONEY, reason=st.just("r"), ttl_seconds=st.integers(1, 30)),
    st.builds(CommitReservation, reservation_id=RIDS, amount=st.none() | MONEY),
    st.builds(ReleaseReservation, reservation_id=RIDS),
    st.just(ExpireReservations()),
    st.builds(SetBudgetTotal, total=st.integers(0, 200).map(str)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(BUDGET_COMMANDS, st.integers(0, 10)), max_size=40))
def test_reservations_never_exceed_what_remains_and_settle_exactly(steps: list[tuple[Any, int]]) -> None:
    state, clock, events = created(), 0, []
    for command, wait in steps:
        clock += wait
        state, result = step(PROJECT, state, command, at(clock))
        if not isinstance(result, Rejection):
            events += result
        b = state.budget
        assert 0 <= b.spent and 0 <= b.reserved and b.spent + b.reserved <= b.total
        assert b.reserved == sum((r.amount for r in state.reservations.values()), Decimal(0))
    assert fold(PROJECT, created(), events) == state


LEASE_COMMANDS = st.one_of(
    st.builds(AcquireLease, holder=st.sampled_from(["a", "b", "c"]), ttl_seconds=st.integers(1, 20)),
    st.builds(RenewLease, holder=st.sampled_from(["a", "b", "c"]), token=st.integers(1, 6),
              ttl_seconds=st.integers(1, 20)),
    st.builds(ReleaseLease, holder=st.sampled_from(["a", "b", "c"]), token=st.integers(1, 6)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(LEASE_COMMANDS, st.integers(0, 15)), max_size=40))
def test_one_holder_at_a_time_and_tokens_only_grow(steps: list[tuple[Any, int]]) -> None:
    state, clock, tokens = lease.initial_state, 0, []
    for command, wait in steps:
        clock += wait
        before = lease.held_by(state, at(clock).now)
        state, result = step(LEASE, state, command, at(clock))
        if isinstance(result, Rejection):
            continue
        grants = [e for e in result if isinstance(e, LeaseGranted)]
        for grant in grants:
            # A grant to someone else only when nobody held the lease at that moment.
            assert before in (None, grant.holder)
            tokens.append(grant.token)
    assert tokens == sorted(set(tokens))
