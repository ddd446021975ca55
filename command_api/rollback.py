"""A run's rollback on the command side: read the streams it touched, plan, and send the plan through the
one submit path.

The plan is made from the audit trail (``change_log``, the read models' pool, as the reservation
sweeper reads them) by the pure ``domain.compensators.plan_run``. The read models may lag the log by
a moment; every compensating command is guarded (shot fields by preconditions on the values the plan
saw, DNA entries and the spec by their versions), so the decider refuses one whose fields moved
since, and the answer says so. Commands go one by one, in the plan's order, with deterministic ids:
a rollback sent twice appends nothing the second time.

A run id is not scoped (it only links, like a correlation id): a rollback plans only for the streams of the
caller's tenant that the run touched, so another tenant's run is, to the caller, a run that sent nothing. The
plan names stored streams; each command is sent as the tenant would name it (``unscope_command``), scoped again
where every submission is made.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from blackboard.command_api.errors import CommandError
from blackboard.command_api.service import CommandService, submit_json
from blackboard.domain.compensators import plan_run
from blackboard.domain.decoding import InvalidCommand
from blackboard.domain.rollback import Role, Step, rollback_id
from blackboard.schemas.api import Accepted
from blackboard.schemas.auth import DEFAULT_TENANT
from blackboard.schemas.registry import decode_event
from blackboard.schemas.runs import PlannedCommand, RollbackPlan
from blackboard.schemas.tenancy import TenantMismatch, is_tenants_stream, unscope_command

_STREAMS = "SELECT DISTINCT stream FROM change_log WHERE agent_run_id = $1"
_ROWS = """
SELECT stream, type, schema_version, payload, actor, agent_run_id, correlation_id FROM change_log
WHERE stream = ANY($1::text[]) ORDER BY stream, stream_version"""


def _role(row: Any, run_id: str, rollback: str) -> Role:
    if row["agent_run_id"] == run_id:
        return "run"
    return "rollback" if row["correlation_id"] == rollback else "other"


async def load_steps(pool: asyncpg.Pool, run_id: str, *, tenant: str = DEFAULT_TENANT) -> dict[str, list[Step]]:
    """Every event of each stream of ``tenant`` the run touched, in version order, marked as the run's, the
    rollback's or another's; empty when no event of the tenant's streams carries the run's id."""
    streams = [r["stream"] for r in await pool.fetch(_STREAMS, run_id) if is_tenants_stream(tenant, r["stream"])]
    rollback = rollback_id(run_id)
    steps: dict[str, list[Step]] = {s: [] for s in streams}
    for row in await pool.fetch(_ROWS, streams):
        event = decode_event(row["type"], row["schema_version"], msgspec.json.encode(row["payload"]))
        steps[row["stream"]].append(Step(event, row["actor"], _role(row, run_id, rollback)))
    return steps


async def plan(pool: asyncpg.Pool, run_id: str, *, overwrite: bool, dry_run: bool,
               tenant: str = DEFAULT_TENANT) -> RollbackPlan | None:
    """The run's rollback plan over ``tenant``'s streams; ``None`` when no event of them carries the run's id."""
    steps = await load_steps(pool, run_id, tenant=tenant)
    return plan_run(run_id, steps, overwrite=overwrite, dry_run=dry_run) if steps else None


async def apply(service: CommandService, made: RollbackPlan, *, actor: str,
                tenant: str = DEFAULT_TENANT) -> RollbackPlan:
    """Send the plan's commands in order, as ``actor`` of ``tenant``, correlated to the rollback id; each with its
    outcome."""
    done = [await _send(service, c, actor=actor, tenant=tenant, correlation=made.rollback_id) for c in made.commands]
    return msgspec.structs.replace(made, commands=done)


async def _send(service: CommandService, command: PlannedCommand, *, actor: str, tenant: str,
                correlation: str) -> PlannedCommand:
    try:
        # Planned from stored streams: sent as the tenant names them, and never for another tenant's stream.
        owner, stream, payload = unscope_command(command.stream, command.type, command.payload)
        if owner != tenant:
            raise TenantMismatch(f"{command.stream!r} is not a stream of tenant {tenant!r}")
        outcome = await submit_json(service, stream=stream, type_=command.type, payload=payload,
                                    command_id=command.command_id, actor=actor, tenant=tenant,
                                    correlation_id=correlation, causation_id=correlation)
    except TenantMismatch as exc:
        return msgspec.structs.replace(command, status="invalid", detail=str(exc))
    except InvalidCommand as exc:
        return msgspec.structs.replace(command, status="invalid", detail=str(exc))
    except CommandError as exc:
        # Not decided (the log did not answer, the partition moved, the id was used for another command):
        # the answer says so, and the same rollback sent again retries it with the same id.
        return msgspec.structs.replace(command, status="failed", detail=f"{exc.code}: {exc.message}")
    if isinstance(outcome, Accepted):
        return msgspec.structs.replace(command, status="accepted" if outcome.events else "unchanged",
                                       position=outcome.position)
    return msgspec.structs.replace(command, status="rejected", detail=f"{outcome.code}: {outcome.message}")
