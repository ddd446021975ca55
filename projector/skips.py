"""An operator's skip record in the events topic (``events.skips``), applied where the fold meets it.

A batch is folded in parts, each ending at a skip record: the part's records first (so a record
the skip names, in the same batch, is a dead letter by then), then the skip itself, as ``dead-letters
skip`` does: the letter is marked skipped, its stream takes its version, the letters held behind it
are folded again. The live projector, a rebuild and a verify all come through here, so they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import structlog

from blackboard.events.log import PartitionedLog
from blackboard.events.skips import skip_of
from blackboard.projector import poison
from blackboard.projector.cache import CachedDoc
from blackboard.projector.dead_letters import DeadLetterError
from blackboard.projector.fold import Item, Passed
from blackboard.projector.statements import statement

log = structlog.get_logger(__name__)


def parts(items: Sequence[Item]) -> list[Sequence[Item]]:
    """``items`` cut after each skip record, in order (one part when there is none), no part empty."""
    out: list[Sequence[Item]] = []
    start = 0
    for i, item in enumerate(items):
        if isinstance(item, Passed) and skip_of(item.rec) is not None:
            out.append(items[start:i + 1])
            start = i + 1
    if start < len(items):
        out.append(items[start:])
    return out


async def apply(conn: asyncpg.Connection, log_: PartitionedLog, item: Item, *, projection: str, topic: str,
                notify_channel: str | None, caching: bool) -> list[CachedDoc]:
    """Apply ``item`` when it is a skip record, inside the caller's transaction; the documents it changed.

    Note: a skip of a record that is no open dead letter here (this build applied it, or the skip
    was applied already) changes nothing: applying a skip twice is applying it once.
    """
    skip = skip_of(item.rec) if isinstance(item, Passed) else None
    if skip is None:
        return []
    letter = await conn.fetchrow(statement("dead_letter_at"), projection, topic, item.rec.partition, skip.offset)
    if letter is None or letter["status"] != "open":
        return []
    try:
        outcome, docs = await poison.resolve(conn, log_, projection=projection, topic=topic, letter_id=letter["id"],
                                             skip=True, notify_channel=notify_channel, caching=caching)
    except DeadLetterError as exc:
        log.warning("projector.skip_not_applied", partition=item.rec.partition, offset=skip.offset, reason=str(exc))
        return []
    log.info("projector.skip_applied", partition=item.rec.partition, offset=skip.offset, stream=skip.stream,
             operator=skip.operator, reason=skip.reason, released=len(outcome.applied))
    return docs
