"""The compensators by stream category, and a run's whole rollback plan over the streams it touched.

Categories without a compensator (documents, checkpoints, nodes, the clock, sagas) are listed as
unrestorable: their changes stay, and the plan says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from blackboard.domain.compensate_lease import LeaseCompensator
from blackboard.domain.compensate_project import ProjectCompensator
from blackboard.domain.compensate_task import TaskCompensator
from blackboard.domain.registry import DECIDERS
from blackboard.domain.rollback import Compensator, Step, plan_stream, rollback_id
from blackboard.schemas.runs import RollbackPlan, Unrestorable

COMPENSATORS: dict[str, Compensator] = {
    "project": ProjectCompensator(),
    "task": TaskCompensator(),
    "lease": LeaseCompensator(),
}


def plan_run(run_id: str, streams: Mapping[str, Sequence[Step]], *, overwrite: bool = False,
             dry_run: bool = True) -> RollbackPlan:
    """The rollback plan of ``run_id``: ``streams`` holds every event of each stream the run touched, in
    version order, each marked as the run's, the rollback's or another's."""
    plan = RollbackPlan(run_id=run_id, rollback_id=rollback_id(run_id), dry_run=dry_run,
                        on_conflict="overwrite" if overwrite else "skip", commands=[], conflicts=[], unrestorable=[])
    for stream in sorted(streams):
        category = stream.partition(":")[0]
        compensator, decider = COMPENSATORS.get(category), DECIDERS.get(category)
        if compensator is None or decider is None:
            plan.unrestorable.append(Unrestorable(stream, "", f"no compensation is defined for {category} streams"))
            continue
        part = plan_stream(run_id, stream, decider, compensator, streams[stream], overwrite=overwrite)
        plan.commands.extend(part.commands)
        plan.conflicts.extend(part.conflicts)
        plan.unrestorable.extend(part.unrestorable)
    return plan
