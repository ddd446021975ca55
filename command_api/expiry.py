"""The reservation sweeper: sends ``project.expire_reservations`` for projects whose reservations ran out.

A process manager in miniature. It reads which projects hold a reservation past its expiry from
the read model and sends a command; the decider releases every expired reservation at the time it
decides (``project.reservation_released``, ``why: expired``). The sweeper only makes that happen
without waiting for the next budget command: the rule itself lives in the decider, which also
applies it to any budget command, so a late or stopped sweeper never lets money stay held.

Its command ids are deterministic (the project and the version the read model showed), so a
restart, or two sweepers at once, cannot release anything twice: a repeated id is answered with
its first outcome and appends nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import structlog

from blackboard.command_api.service import CommandService, submit
from blackboard.schemas.api import CommandRequest
from blackboard.schemas.project import ExpireReservations
from blackboard.schemas.tenancy import is_default, split_id

log = structlog.get_logger(__name__)

#: How often the sweeper looks, and the most projects it handles per look.
SWEEP_SECONDS = 1.0
SWEEP_BATCH = 500
#: The principal the sweeper's commands are recorded under.
ACTOR = "blackboard:sweeper"

_EXPIRED = """
SELECT id, version FROM projects
WHERE reservations <> '{}' AND EXISTS (
    SELECT 1 FROM jsonb_each(reservations) AS r(id, value) WHERE (r.value ->> 'expires_at')::timestamptz <= $1)
ORDER BY id LIMIT $2"""


async def sweep_once(pool: asyncpg.Pool, commands: CommandService, now: datetime | None = None) -> int:
    """Send one expiry command per project holding an expired reservation; how many were sent."""
    rows = await pool.fetch(_EXPIRED, now or datetime.now(UTC), SWEEP_BATCH)
    for row in rows:
        # The row names the stored project: the command is sent as its tenant names it, under that tenant.
        tenant, local = split_id(row["id"])
        request = CommandRequest(type="project.expire_reservations", stream=f"project:{local}", payload={},
                                 command_id=f"expire-reservations:{local}:{row['version']}")
        await submit(commands, request, ExpireReservations(), actor=ACTOR,
                     tenant=None if is_default(tenant) else tenant)
    return len(rows)


async def run_sweeper(pool_of: Callable[[], asyncpg.Pool], commands: CommandService) -> None:
    """Sweep every ``SWEEP_SECONDS`` until cancelled; a failed sweep is logged and tried again.

    ``pool_of`` gives the read-model pool of the moment: the runtime swaps it when a rebuilt
    generation goes live.
    """
    while True:
        try:
            sent = await sweep_once(pool_of(), commands)
            if sent:
                log.info("sweeper.expired", projects=sent)
        except Exception as exc:  # never crash: the next look tries again
            log.warning("sweeper.failed", error=repr(exc))
        await asyncio.sleep(SWEEP_SECONDS)

