"""Agent runs read from the audit trail: a run's summary, its changes with their field diffs, and its effects.

Every read starts from ``change_log_agent_run_idx`` (the run's events) or ``change_log_causation_idx``
(what an event caused), so none scans the log. Field diffs are computed as the history routes compute
them: by folding each stream the run touched with its decider up to the run's last event there.

A run is its tenant's: two tenants may use the same run id, and each sees only the events of its own streams
(every statement is confined by ``change_log.tenant``, the tenant of the row's stored stream: migration 0010).

Note: "log order" across streams is ``(occurred_at, partition, offset)``: the owner's clock at the
decision, then the log position; within one stream it is the stream's version order.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import msgspec

from blackboard.query_api import history as h
from blackboard.schemas.auth import DEFAULT_TENANT
from blackboard.schemas.errors import InvalidRequest, NotFound
from blackboard.schemas.runs import Effect, RunChanges, RunEffects, RunMoney, RunStream, RunSummary
from blackboard.schemas.views import HistoryEntry

_SUMMARY = """
SELECT array_remove(array_agg(DISTINCT agent_model), NULL) AS models,
       array_remove(array_agg(DISTINCT prompt_hash), NULL) AS prompt_hashes,
       array_agg(DISTINCT actor) AS principals, min(occurred_at) AS first_at, max(occurred_at) AS last_at,
       count(*) AS events, count(DISTINCT command_id) AS commands
FROM change_log WHERE agent_run_id = $1 AND tenant = $2 HAVING count(*) > 0"""
_BY_TYPE = """SELECT type, count(*) AS n FROM change_log WHERE agent_run_id = $1 AND tenant = $2
GROUP BY type ORDER BY type"""
_STREAMS = """SELECT stream, count(*) AS n FROM change_log WHERE agent_run_id = $1 AND tenant = $2
GROUP BY stream ORDER BY stream"""
# Spent: costs added and reservations committed (an artifact's cost is one of the two); reserved: holds made.
_MONEY = """
SELECT m.project_id, p.currency, m.spent, m.reserved FROM (
    SELECT split_part(stream, ':', 2) AS project_id,
           coalesce(sum((payload->>'amount')::numeric) FILTER (
               WHERE type IN ('project.cost_added', 'project.reservation_committed')), 0) AS spent,
           coalesce(sum((payload->>'amount')::numeric) FILTER (WHERE type = 'project.budget_reserved'), 0) AS reserved
    FROM change_log WHERE agent_run_id = $1 AND tenant = $2 AND type IN
        ('project.cost_added', 'project.reservation_committed', 'project.budget_reserved')
    GROUP BY 1) AS m
LEFT JOIN projects p ON p.id = m.project_id ORDER BY m.project_id"""
_CHANGES = """
SELECT * FROM change_log WHERE agent_run_id = $1 AND (occurred_at, partition, "offset") > ($2, $3, $4)
  AND tenant = $6
ORDER BY occurred_at, partition, "offset" LIMIT $5"""
_CAUSED = """
SELECT * FROM change_log WHERE causation_id = ANY($1::text[]) AND agent_run_id IS DISTINCT FROM $2
  AND tenant = $4
ORDER BY occurred_at, partition, "offset" LIMIT $3"""
_RUN_EVENT_IDS = "SELECT event_id FROM change_log WHERE agent_run_id = $1 AND tenant = $2"
_FIRST = datetime.fromisoformat("0001-01-01T00:00:00+00:00")

#: How far and how wide ``effects`` walks: levels of causation, and events in all.
MAX_DEPTH = 16
MAX_EFFECTS = 5000


def _money(amount: Decimal) -> str:
    return format(amount, "f")


async def run_summary(pool: asyncpg.Pool, run_id: str, *, tenant: str = DEFAULT_TENANT) -> RunSummary:
    """The run as ``tenant``'s audit trail records it; 404 ``run_not_found`` when none of its events carries its
    id. Streams and projects are named by their stored ids."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_SUMMARY, run_id, tenant)
        if row is None:
            raise NotFound(f"no event was sent by agent run {run_id!r}", code="run_not_found")
        by_type = {r["type"]: r["n"] for r in await conn.fetch(_BY_TYPE, run_id, tenant)}
        streams = [RunStream(r["stream"], r["n"]) for r in await conn.fetch(_STREAMS, run_id, tenant)]
        money = [RunMoney(r["project_id"], r["currency"], _money(r["spent"]), _money(r["reserved"]))
                 for r in await conn.fetch(_MONEY, run_id, tenant)]
    return RunSummary(
        run_id=run_id, models=sorted(row["models"]), prompt_hashes=sorted(row["prompt_hashes"]),
        principals=sorted(row["principals"]), first_at=row["first_at"], last_at=row["last_at"],
        events=row["events"], commands=row["commands"], by_type=by_type, outcomes={"accepted": row["commands"]},
        streams=streams, money=money,
    )


# ── changes ────────────────────────────────────────────────────────────────────────────


def encode_cursor(row: h.Row) -> str:
    raw = msgspec.json.encode([row["occurred_at"].isoformat(), row["partition"], row["offset"]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, int, int]:
    """The position after which a page starts; 422 ``invalid_cursor`` for one this API did not make."""
    if cursor is None:
        return _FIRST, -1, -1
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, partition, offset = msgspec.json.decode(raw, type=tuple[datetime, int, int])
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidRequest("cursor is not one this API returned", code="invalid_cursor") from None
    if at.tzinfo is None or not -1 <= partition < 2**31 or not -1 <= offset < 2**63:
        raise InvalidRequest("cursor is not one this API returned", code="invalid_cursor")
    try:
        at.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest("cursor is not one this API returned", code="invalid_cursor") from None
    return at, partition, offset


async def with_changes(pool: asyncpg.Pool, rows: Sequence[h.Row]) -> list[HistoryEntry]:
    """The history entries of ``rows`` (in their order), each with the fields its event changed.

    Each stream among them is folded once, from version 1 to the last version asked for.
    """
    wanted: dict[str, int] = defaultdict(int)
    for row in rows:
        wanted[row["stream"]] = max(wanted[row["stream"]], row["stream_version"])
    found: dict[tuple[str, int], HistoryEntry] = {}
    for stream, upto in wanted.items():
        replay = h.Replay(h.category_of(stream))
        for row in await h.load_rows(pool, stream, version=upto):
            entry = replay.feed(row)
            found[(stream, entry.version)] = entry
    return [found[(r["stream"], r["stream_version"])] for r in rows]


async def run_changes(pool: asyncpg.Pool, run_id: str, *, cursor: str | None, limit: int,
                      tenant: str = DEFAULT_TENANT) -> RunChanges:
    """A page of the run's events in ``tenant``'s streams in log order, with their field diffs; 404
    ``run_not_found`` for no run."""
    at, partition, offset = decode_cursor(cursor)
    rows: list[h.Row] = await pool.fetch(_CHANGES, run_id, at, partition, offset, limit + 1, tenant)
    if not rows and cursor is None:
        raise NotFound(f"no event was sent by agent run {run_id!r}", code="run_not_found")
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]) if len(rows) > limit else None
    return RunChanges(run_id=run_id, items=await with_changes(pool, page), next_cursor=next_cursor)


# ── effects ────────────────────────────────────────────────────────────────────────────


async def run_effects(pool: asyncpg.Pool, run_id: str, *, max_depth: int = MAX_DEPTH,
                      limit: int = MAX_EFFECTS, tenant: str = DEFAULT_TENANT) -> RunEffects:
    """Every event caused, directly or through others, by the run's events, with the chain that led to it.

    An event is caused by another when its causation id is that event's id (a process manager's
    command carries the event that called for it). The walk goes level by level over the causation
    index; events the run sent itself are its changes, not its effects, and are not followed twice. Only events of
    ``tenant``'s streams are seeds or effects.
    """
    seeds: list[str] = [r["event_id"] for r in await pool.fetch(_RUN_EVENT_IDS, run_id, tenant)]
    if not seeds:
        raise NotFound(f"no event was sent by agent run {run_id!r}", code="run_not_found")
    chains: dict[str, list[str]] = {s: [] for s in seeds}
    effects: list[tuple[h.Row, list[str]]] = []
    frontier, truncated = seeds, False
    for depth in range(1, max_depth + 1):
        if not frontier:
            break
        rows: list[h.Row] = await pool.fetch(_CAUSED, frontier, run_id, limit - len(effects) + 1, tenant)
        fresh = [r for r in rows if r["event_id"] not in chains]
        for row in fresh:
            chains[row["event_id"]] = [*chains[row["causation_id"]], row["causation_id"]]
            effects.append((row, chains[row["event_id"]]))
        if len(effects) > limit:
            effects, truncated = effects[:limit], True
            break
        frontier = [r["event_id"] for r in fresh]
        if depth == max_depth and frontier:
            truncated = True
    entries = await with_changes(pool, [row for row, _ in effects])
    items = [Effect(entry=e, chain=chain, depth=len(chain)) for e, (_, chain) in zip(entries, effects, strict=True)]
    return RunEffects(run_id=run_id, items=items, truncated=truncated)

