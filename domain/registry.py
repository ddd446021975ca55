"""The deciders by stream category (``project:p-1`` → ``"project"``): a plain dict.

Every decider module imports ``Rejection`` and ``Context`` from ``blackboard.domain.decider``;
this module imports the deciders, so nothing here is circular.
"""

from __future__ import annotations

from typing import Any

from blackboard.domain import checkpoint, clock, document, lease, node, project, saga, task
from blackboard.domain.decider import Decider

DECIDERS: dict[str, Decider[Any, Any, Any]] = {
    project.CATEGORY: Decider(project.initial_state, project.decide, project.evolve),
    task.CATEGORY: Decider(task.initial_state, task.decide, task.evolve),
    lease.CATEGORY: Decider(lease.initial_state, lease.decide, lease.evolve),
    node.CATEGORY: Decider(node.initial_state, node.decide, node.evolve),
    clock.CATEGORY: Decider(clock.initial_state, clock.decide, clock.evolve),
    saga.CATEGORY: Decider(saga.initial_state, saga.decide, saga.evolve),
    document.CATEGORY: Decider(document.initial_state, document.decide, document.evolve),
    checkpoint.CATEGORY: Decider(checkpoint.initial_state, checkpoint.decide, checkpoint.evolve),
}
