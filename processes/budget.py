"""Budget alerts: when spending reaches 80% and then 100% of a project's budget, an alert is raised once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from blackboard.processes.manager import Intent, Seen, intent
from blackboard.schemas import project as p

LEVELS = (80, 100)


@dataclass(slots=True)
class Budgets:
    #: project id → (total, spent, levels raised at that total).
    projects: dict[str, tuple[Decimal, Decimal, dict[str, Decimal]]] = field(default_factory=dict)


class BudgetAlerts:
    """Folds each project's total and spending; raises each level once per budget total (the total is in the
    command, so a budget raised later and crossed again raises the level again)."""

    name = "budget-alerts"

    def initial(self) -> Budgets:
        return Budgets()

    def handle(self, state: Budgets, seen: Seen) -> tuple[Budgets, list[Intent]]:
        if not seen.stream.startswith("project:"):
            return state, []
        e = seen.event
        known = state.projects.get(seen.ident)
        match e:
            case p.ProjectCreated():
                state.projects[seen.ident] = (e.budget_total, Decimal(0), {})
            case p.BudgetTotalSet() if known:
                state.projects[seen.ident] = (e.total, known[1], known[2])
            case p.CostAdded() if known:
                state.projects[seen.ident] = (known[0], known[1] + e.amount, known[2])
            case p.CostRefunded() if known:
                state.projects[seen.ident] = (known[0], known[1] - e.amount, known[2])
            case p.ReservationCommitted() if known:
                state.projects[seen.ident] = (known[0], known[1] + e.amount, known[2])
            case p.BudgetAlertRaised() if known:
                state.projects[seen.ident] = (known[0], known[1], {**known[2], str(e.level): e.total})
            case _:
                return state, []
        return state, self._alerts(state, seen.ident, seen)

    def _alerts(self, state: Budgets, project_id: str, cause: Seen | None) -> list[Intent]:
        total, spent, raised = state.projects[project_id]
        return [intent(self.name, f"project:{project_id}", "project.raise_budget_alert",
                       {"level": level, "total": str(total)}, cause)
                for level in LEVELS
                if total > 0 and spent * 100 >= total * level and raised.get(str(level)) != total]

    def pending(self, state: Budgets) -> list[Intent]:
        return [i for pid in sorted(state.projects) for i in self._alerts(state, pid, None)]

    def due(self, state: Budgets) -> datetime | None:
        return None

    def rejected(self, state: Budgets, sent: Intent, code: str) -> list[Intent]:
        return []
