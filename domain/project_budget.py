"""The project decider's budget rules: money is never spent or held beyond the total."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from blackboard.domain.decider import Context, Rejection
from blackboard.domain.project_state import Project
from blackboard.schemas.project import (
    AddCost,
    BudgetAlertRaised,
    BudgetReserved,
    BudgetTotalSet,
    CommitReservation,
    CostAdded,
    CostRefunded,
    ExpireReservations,
    ProjectEvent,
    RaiseBudgetAlert,
    RefundCost,
    ReleaseReservation,
    ReservationCommitted,
    ReservationReleased,
    ReserveBudget,
    SetBudgetTotal,
)

Decision = list[ProjectEvent] | Rejection


def money(amount: Decimal) -> str:
    """Fixed-point always: ``str()`` of a Decimal may choose exponent notation."""
    return format(amount, "f")


def _budget_details(state: Project, **extra: str) -> dict[str, str]:
    b = state.budget
    return {"total": money(b.total), "spent": money(b.spent), "reserved": money(b.reserved),
            "remaining": money(b.remaining), "currency": state.currency, **extra}


def _set_total(state: Project, c: SetBudgetTotal, ctx: Context) -> Decision:
    total, b = Decimal(c.total), state.budget
    if not ctx.require("total >= spent", total >= b.spent):
        return Rejection("budget_below_spent", f"the total {money(total)} is below what is already spent, "
                         f"{money(b.spent)} {state.currency}", _budget_details(state, asked=money(total)))
    if not ctx.require("total >= spent + reserved", total >= b.spent + b.reserved):
        return Rejection("budget_below_reserved", f"the total {money(total)} is below spent {money(b.spent)} plus "
                         f"reserved {money(b.reserved)} {state.currency}", _budget_details(state, asked=money(total)))
    if total == b.total:
        return []
    return [BudgetTotalSet(total, b.total)]


def _fits(state: Project, amount: Decimal, ctx: Context) -> Rejection | None:
    """``budget_exceeded`` when ``amount`` is more than what remains, else ``None``."""
    if ctx.require("amount <= remaining (total - spent - reserved)", amount <= state.budget.remaining):
        return None
    b = state.budget
    return Rejection(
        "budget_exceeded",
        f"{money(amount)} is more than what remains, {money(b.remaining)} {state.currency} "
        f"(total {money(b.total)}, spent {money(b.spent)}, reserved {money(b.reserved)})",
        _budget_details(state, amount=money(amount)),
    )


def _add_cost(state: Project, c: AddCost, ctx: Context) -> Decision:
    amount = Decimal(c.amount)
    refused = _fits(state, amount, ctx)
    return refused or [CostAdded(amount, c.reason, c.artifact_id)]


def _refund(state: Project, c: RefundCost, ctx: Context) -> Decision:
    amount = Decimal(c.amount)
    if not ctx.require("amount <= spent", amount <= state.budget.spent):
        return Rejection("refund_exceeds_spent", f"{money(amount)} is more than what is spent, "
                         f"{money(state.budget.spent)} {state.currency}", _budget_details(state, amount=money(amount)))
    return [CostRefunded(amount, c.reason)]


def _reserve(state: Project, c: ReserveBudget, ctx: Context) -> Decision:
    amount = Decimal(c.amount)
    known = state.reservations.get(c.reservation_id)
    if not ctx.require("reservation_id is not in use", known is None):
        assert known is not None
        return Rejection("reservation_exists", f"reservation {c.reservation_id!r} is already held",
                         {"reservation_id": c.reservation_id, "amount": money(known.amount),
                          "expires_at": known.expires_at.isoformat()})
    refused = _fits(state, amount, ctx)
    expires_at = ctx.now + timedelta(seconds=c.ttl_seconds)
    return refused or [BudgetReserved(c.reservation_id, amount, c.reason, expires_at, ctx.actor)]


def _held(state: Project, reservation_id: str, ctx: Context) -> Rejection | None:
    ok = ctx.require("the reservation is held (not committed, released or expired)",
                     reservation_id in state.reservations)
    if ok:
        return None
    return Rejection("reservation_not_found", f"no reservation {reservation_id!r} is held: it was never made, "
                     "or it was already committed, released or has expired", {"reservation_id": reservation_id})


def _commit(state: Project, c: CommitReservation, ctx: Context) -> Decision:
    refused = _held(state, c.reservation_id, ctx)
    if refused:
        return refused
    held = state.reservations[c.reservation_id]
    amount = held.amount if c.amount is None else Decimal(c.amount)
    if not ctx.require("amount <= the reserved amount", amount <= held.amount):
        return Rejection("reservation_exceeded", f"{money(amount)} is more than the {money(held.amount)} reserved",
                         {"reservation_id": c.reservation_id, "amount": money(amount), "reserved": money(held.amount)})
    reason = c.reason or held.reason
    return [ReservationCommitted(c.reservation_id, amount, held.amount - amount, reason, c.artifact_id)]


def _release(state: Project, c: ReleaseReservation, ctx: Context) -> Decision:
    refused = _held(state, c.reservation_id, ctx)
    if refused:
        return refused
    return [ReservationReleased(c.reservation_id, state.reservations[c.reservation_id].amount, "released", c.reason)]


def _expire(state: Project, c: ExpireReservations, ctx: Context) -> Decision:
    return []  # ``decide`` has already released every expired reservation


def _alert(state: Project, c: RaiseBudgetAlert, ctx: Context) -> Decision:
    """Raised once per level and total: a budget raised later can cross the level again."""
    budget = state.budget
    if state.alerts.get(str(c.level)) == budget.total:
        return []
    if not ctx.require(f"spending reached {c.level}% of the budget", budget.spent * 100 >= budget.total * c.level):
        return Rejection("below_alert_level", f"spent {budget.spent} is below {c.level}% of {budget.total}")
    return [BudgetAlertRaised(c.level, budget.spent, budget.total)]


