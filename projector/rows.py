"""A batch's reads and writes: the rows it touches loaded, folded (``projector.fold``), then its rows, change
log, dead letters and offsets written, all inside the caller's transaction (``apply``).

The rows are loaded with one query per table and written back with one statement per table; the
statements are the named files of ``projector/sql`` (``projector.statements``), or made from a
``StateTable``'s declaration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import msgspec

from blackboard.domain.project_state import Budget, Project, Shot, Spec
from blackboard.events.tracing import event_trace_id
from blackboard.projector import dead_letters, state_table
from blackboard.projector.cache import CachedDoc
from blackboard.projector.documents import PROJECT_VIEW_COLUMNS, project_view, task_view
from blackboard.projector.fold import BatchFold, Decoded, Item, occurred_at, stream_of, touched
from blackboard.projector.statements import statement
from blackboard.projector.tables import ARTIFACTS, PROJECTS, SHOTS, STATE_TABLES, ColumnTable

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool

CHANGE_COLUMNS = ("stream", "stream_version", "partition", "offset", "event_id", "type", "schema_version", "actor",
                  "command_id", "correlation_id", "causation_id", "occurred_at", "payload", "trace_id",
                  "agent_run_id", "agent_model", "prompt_hash")


# ── offsets ─────────────────────────────────────────────────────────────────────────────


async def ensure_offsets(db: Executor, projection: str, topic: str, partitions: Sequence[int]) -> None:
    """Give each of ``partitions`` an offset row (starting at 0) if it has none."""
    await db.execute(statement("ensure_offsets"), projection, topic, list(partitions))


async def positions(db: Executor, projection: str, topic: str) -> dict[int, int]:
    """The stored next offset of every partition of ``topic``."""
    rows = await db.fetch(statement("positions"), projection, topic)
    return {r["partition"]: r["next_offset"] for r in rows}


async def lock_offsets(conn: asyncpg.Connection, projection: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """The stored next offset of ``partitions``, locked until commit (in partition order: no deadlock)."""
    rows = await conn.fetch(statement("lock_offsets"), projection, topic, partitions)
    if len(rows) < len(partitions):
        await ensure_offsets(conn, projection, topic, partitions)
        rows = await conn.fetch(statement("lock_offsets"), projection, topic, partitions)
    return {r["partition"]: r["next_offset"] for r in rows}


# ── one batch: load, fold, write ────────────────────────────────────────────────────────


async def apply(conn: asyncpg.Connection, items: Sequence[Item], positions: dict[int, int], *, projection: str,
                topic: str, notify_channel: str | None, caching: bool) -> tuple[BatchFold, list[CachedDoc]]:
    """Fold ``items`` (records not yet applied) into the rows they touch, inside the caller's transaction: the
    rows loaded (``load``), the events folded in log order (``BatchFold.fold``), everything written (``write``)
    with the offsets ``positions``. The fold, and the documents ``write`` returns."""
    fold = await load(conn, [i for i in items if isinstance(i, Decoded)], projection=projection)
    streams = {s for s in map(stream_of, items) if s is not None}
    fold.blocked = await dead_letters.blocked(conn, projection, list(streams))
    for item in items:
        fold.fold(item)
    docs = await write(conn, fold, positions, projection=projection, topic=topic, notify_channel=notify_channel,
                       caching=caching)
    return fold, docs


# ── loading ─────────────────────────────────────────────────────────────────────────────


async def load(conn: asyncpg.Connection, events: list[Decoded], streams: Sequence[str] = (), *,
               projection: str) -> BatchFold:
    """The current rows of everything ``events`` (and ``streams``) touch, one query per table, and the
    ``floors`` of those without a row (``_floors``).

    Note: the rows are read without a row lock. The offset rows locked before are enough:
    every event of an entity is in its key's partition, so one batch at a time touches it.
    """
    ids = touched(events)
    for category, _, ident in (s.partition(":") for s in streams):  # rows of records that did not decode
        if category in ids and ident not in ids[category]:
            ids[category].append(ident)
    projects = await _fetch_by(conn, statement("load_projects"), ids["project"], "id") if ids["project"] else {}
    await _project_states(conn, projects)
    states = {category: await state_table.load(conn, table, ids[category])
              for category, table in STATE_TABLES.items() if ids.get(category)}
    fold = BatchFold(projects, recorded={}, states=states)
    fold.recorded = await _recorded(conn, fold, events)
    fold.floors = await _floors(conn, fold, events, streams, projection)
    return fold


async def _floors(conn: asyncpg.Connection, fold: BatchFold, events: list[Decoded], streams: Sequence[str],
                  projection: str) -> dict[str, int]:
    """The version of each stream without a row whose first records were skipped: the run of versions
    1, 2, … of its ``skipped`` letters (``BatchFold.skip`` moved it one at a time, so it has no gap).

    Note: only a stream a skip resolves here (``streams``) or one whose event without a row is not
    version 1 can have one, so the common batch asks nothing.
    """
    def rowless(stream: str) -> bool:
        category, _, ident = stream.partition(":")
        rows = fold.rows(category)
        return rows is not None and ident not in rows

    wanted = {s for s in streams if rowless(s)}
    wanted |= {e.env.stream for e in events if e.env.stream_version > 1 and rowless(e.env.stream)}
    if not wanted:
        return {}
    versions: dict[str, set[int]] = defaultdict(set)
    for r in await conn.fetch(statement("skipped_versions"), projection, list(wanted)):
        versions[r["stream"]].add(r["version"])
    floors = {}
    for stream, skipped in versions.items():
        floor = 0
        while floor + 1 in skipped:
            floor += 1
        if floor:
            floors[stream] = floor
    return floors


async def _recorded(conn: asyncpg.Connection, fold: BatchFold, events: list[Decoded]) -> dict[tuple[str, int], str]:
    """The change-log entries of the events at or below their stream's current version.

    An event above it cannot be in the change log yet, so the common batch asks nothing.
    """
    def current(e: Decoded) -> int:
        rows = fold.rows(e.category)
        row = rows.get(e.ident) if rows is not None else None
        return int(row["version"]) if row else 0

    older = [e for e in events if e.env.stream_version <= current(e)]
    if not older:
        return {}
    rows = await conn.fetch(statement("load_recorded"), [e.env.stream for e in older],
                            [e.env.stream_version for e in older])
    return {(r["stream"], r["stream_version"]): r["event_id"] for r in rows}


async def _fetch_by(conn: asyncpg.Connection, sql: str, ids: list[str], key: str) -> dict[Any, dict[str, Any]]:
    """Rows of ``sql`` for ``ids``, as mutable dicts, by their ``key`` column."""
    return {r[key]: dict(r.items()) for r in await conn.fetch(sql, ids)}


async def _project_states(conn: asyncpg.Connection, rows: dict[Any, dict[str, Any]]) -> None:
    """Turn each project row's ``state`` into the decider's ``Project``.

    Note: a row written before the state column existed has none; its state is rebuilt from its
    columns and its shots (every such project is ``draft`` with nothing reserved, as it was then).
    """
    legacy = [ident for ident, row in rows.items() if row["state"] is None]
    shots: dict[str, dict[str, Shot]] = defaultdict(dict)
    if legacy:
        for shot in await conn.fetch(statement("load_shots"), legacy):
            shots[shot["project_id"]][shot["shot_id"]] = Shot(shot["fields"], shot["version"])
    for ident, row in rows.items():
        if row["state"] is None:
            row["state"] = Project(row["title"], row["status"], row["currency"],
                                   Budget(row["budget_total"], row["spent"], row["reserved"]),
                                   Spec(row["global_spec"], row["spec_version"]), shots=shots[ident])
        else:
            row["state"] = msgspec.convert(row["state"], Project, strict=False)


# ── writing ─────────────────────────────────────────────────────────────────────────────


async def write(conn: asyncpg.Connection, fold: BatchFold, positions: dict[int, int], *, projection: str,
                topic: str, notify_channel: str | None, caching: bool) -> list[CachedDoc]:
    """Write the batch's rows, change log, dead letters and offsets; notify; with ``caching``, return the
    documents of the projects and tasks it changed."""
    returning = f" RETURNING {PROJECT_VIEW_COLUMNS}" if caching else ""
    project_rows = await _write_columns(conn, PROJECTS, fold.changed("project"), returning)
    await _write_columns(conn, SHOTS, fold.shot_rows())
    await _write_columns(conn, ARTIFACTS, fold.artifact_rows_new())
    for category, table in STATE_TABLES.items():
        await state_table.upsert(conn, table, fold.changed(category))
    if fold.extra_rows:
        await state_table.insert_extra(conn, fold.extra_rows)
    tasks = fold.changed("task")
    task_rows = await conn.fetch(statement("load_tasks"), [t["id"] for t in tasks]) if caching and tasks else []
    if fold.applied:
        # COPY: the largest write of a batch, and a third faster than INSERT … unnest here.
        await conn.copy_records_to_table("change_log", records=_change_records(fold.applied), columns=CHANGE_COLUMNS)
    await dead_letters.set_aside(conn, projection, fold.poison)
    # The notification is delivered on commit: a reader waiting for a position re-reads the offsets then.
    if positions and notify_channel is not None:  # the common batch: both in one round trip
        await conn.execute(statement("save_offsets_notify"), projection, topic, list(positions),
                           list(positions.values()), notify_channel)
    elif positions:
        await conn.execute(statement("save_offsets"), projection, topic, list(positions), list(positions.values()))
    elif notify_channel is not None:
        await conn.execute(statement("notify"), notify_channel, projection)
    if not caching:
        return []
    # A project's state holds every shot it has (the shots' rows are written from it, never deleted).
    with_shots = [p["id"] for p in project_rows if fold.projects[p["id"]]["state"].shots]
    return await _documents(conn, project_rows, with_shots, task_rows)


async def _write_columns(conn: asyncpg.Connection, table: ColumnTable, rows: Sequence[dict[str, Any]],
                         returning: str = "") -> list[Any]:
    """Write ``rows`` with ``table``'s statement, one array per column; the rows ``returning`` asks for."""
    if not rows:
        return []
    columns = [[row[name] for row in rows] for name in table.columns]
    if returning:
        written: list[Any] = await conn.fetch(statement(table.write) + returning, *columns)
        return written
    await conn.execute(statement(table.write), *columns)
    return []


def _change_records(events: Sequence[Decoded]) -> list[tuple[Any, ...]]:
    """The ``change_log`` rows of ``events``, in ``CHANGE_COLUMNS`` order.

    Note: the payload goes to jsonb as the bytes the log holds (``msgspec.Raw``), never re-encoded.
    """
    return [
        (e.env.stream, e.env.stream_version, e.rec.partition, e.rec.offset, e.env.event_id, e.env.type,
         e.env.schema_version, e.env.actor, e.env.command_id, e.env.correlation_id, e.env.causation_id,
         occurred_at(e.env), msgspec.Raw(e.env.payload), event_trace_id(e.env), e.env.agent_run_id,
         e.env.agent_model, e.env.prompt_hash)
        for e in events
    ]


async def _documents(conn: asyncpg.Connection, projects: list[Any], with_shots: list[str], tasks: list[Any]
                     ) -> list[CachedDoc]:
    """The documents of the rows the batch wrote, built from what PostgreSQL stored (as the query API does).

    Note: only the projects of ``with_shots`` have shots to load, so a batch of projects without shots
    (budget events, say) makes no round trip for them.
    """
    shots: dict[str, list[Any]] = defaultdict(list)
    if with_shots:
        for shot in await conn.fetch(statement("load_shots"), with_shots):
            shots[shot["project_id"]].append(shot)
    docs = [_cached("project", p, msgspec.json.encode(project_view(p, shots[p["id"]]))) for p in projects]
    return docs + [_cached("task", t, msgspec.json.encode(task_view(t))) for t in tasks]


def _cached(kind: str, row: Any, doc: bytes) -> CachedDoc:
    return CachedDoc(kind, row["id"], row["version"], row["partition"], row["last_offset"], doc)
