"""``project.refund_cost``: money spent given back, never more than is spent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from blackboard.domain import project
from blackboard.domain.decider import Context, Decider, Rejection, fold
from blackboard.processes.budget import BudgetAlerts
from blackboard.processes.manager import Seen
from blackboard.schemas.project import AddCost, CostAdded, CostRefunded, CreateProject, ProjectCreated, RefundCost

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PROJECT: Decider[Any, Any, Any] = Decider(project.initial_state, project.decide, project.evolve)


def run(state: Any, command: Any) -> Any:
    result = PROJECT.decide(state, command, Context(T0, "agent"))
    assert not isinstance(result, Rejection), result
    return fold(PROJECT, state, result)


def test_a_refund_lowers_what_is_spent_and_frees_the_budget() -> None:
    state = run(run(None, CreateProject("T", "EUR", "100")), AddCost("60", "render"))
    result = PROJECT.decide(state, RefundCost("25.5", "charged twice"), Context(T0, "agent"))
    assert result == [CostRefunded(Decimal("25.5"), "charged twice")]
    after = fold(PROJECT, state, result)
    assert (after.budget.spent, after.budget.remaining) == (Decimal("34.5"), Decimal("65.5"))


def test_a_refund_past_what_is_spent_is_refused() -> None:
    state = run(run(None, CreateProject("T", "EUR", "100")), AddCost("10", "render"))
    refused = PROJECT.decide(state, RefundCost("10.01", "x"), Context(T0, "agent"))
    assert isinstance(refused, Rejection) and refused.code == "refund_exceeds_spent"
    assert refused.details["spent"] == "10"


def test_the_alert_manager_counts_a_refund_as_money_no_longer_spent() -> None:
    manager = BudgetAlerts()
    state = manager.initial()
    seen = [("project.created", ProjectCreated("T", "EUR", Decimal(100))),
            ("project.cost_added", CostAdded(Decimal(60), "x")),
            ("project.cost_refunded", CostRefunded(Decimal(50), "x"))]
    for i, (type_, event) in enumerate(seen):
        state, _ = manager.handle(state, Seen("project:p-1", type_, event, f"e-{i}", "c", T0))
    assert state.projects["p-1"][1] == Decimal(10)
