"""History with field changes, and time travel: a stream's state at a version or a time.

The audit trail (``change_log``) holds each applied event with its payload; the state an event
produced is not stored, so both the changes of an entry and a past state are computed by
folding the stream's events again with its category's pure decider (``DECIDERS[category]``).

Note: a fold starts from version 1, so answering costs time linear in the stream's length up to
the version asked for (a page of history folds everything before the page, too). Streams are
short here (a project is thousands of events, not millions); when one is not, fold from the
decider's snapshots instead of from the start.

Everything but the few ``load_*`` functions at the end is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from blackboard.domain.decider import Decider
from blackboard.domain.registry import DECIDERS
from blackboard.projector.documents import history_entry
from blackboard.schemas.changes import diff, under
from blackboard.schemas.errors import InvalidRequest, NotFound, ServiceUnavailable
from blackboard.schemas.registry import UnknownEventType, decode_event
from blackboard.schemas.views import HistoryEntry

#: A ``change_log`` row: an ``asyncpg.Record`` or a dict with the same columns.
Row = Mapping[str, Any]

def builtins(state: Any) -> Any:
    """A decider state as plain JSON-able data; a stream that does not exist yet is ``{}``.

    Note: treating "no stream" as the empty object lets the first event's changes list every
    field it set (``add`` each) instead of one replacement of the whole root.
    """
    return {} if state is None else msgspec.to_builtins(state)


# ── fold ───────────────────────────────────────────────────────────────────────────────


class StateAt(msgspec.Struct, frozen=True):
    """A fold's result: the decider state after ``version`` (0: before the first event)."""

    state: Any
    version: int
    occurred_at: datetime | None


def decider_of(category: str) -> Decider[Any, Any, Any] | None:
    return DECIDERS.get(category)


def category_of(stream: str) -> str:
    return stream.partition(":")[0]


def decode_row(row: Row) -> msgspec.Struct:
    """The event of a ``change_log`` row, upcast to today's Struct.

    Raises ``ServiceUnavailable`` (``event_not_decodable``) when this build cannot read it: the
    projector (a newer build) recorded it, so an upgraded reader can.
    """
    try:
        return decode_event(row["type"], row["schema_version"], msgspec.json.encode(row["payload"]))
    except (UnknownEventType, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ServiceUnavailable(
            f"event {row['stream']}@{row['stream_version']} ({row['type']} v{row['schema_version']}) "
            f"cannot be decoded by this build: {exc}",
            code="event_not_decodable",
        ) from None


def fold_steps(decider: Decider[Any, Any, Any], rows: Iterable[Row]) -> Iterator[tuple[Row, Any]]:
    """Each row (in version order) with the state right after its event."""
    state = decider.initial_state
    for row in rows:
        state = decider.evolve(state, decode_row(row))
        yield row, state


def fold_at(category: str, rows: Iterable[Row], *, version: int | None = None,
            at: datetime | None = None) -> StateAt:
    """The state of a stream of ``category`` after its rows up to ``version`` and up to time ``at``.

    ``rows`` are the stream's ``change_log`` rows in version order; both bounds are inclusive and
    either may be ``None`` (no bound). The fold stops at the first row past a bound, so the
    result is always the state after a prefix of the stream, even if clocks made ``occurred_at``
    go backwards somewhere.

    Raises ``KeyError`` for a category without a decider.
    """
    decider = DECIDERS[category]
    reached = StateAt(decider.initial_state, 0, None)
    for row, state in fold_steps(decider, _prefix(rows, version, at)):
        reached = StateAt(state, row["stream_version"], row["occurred_at"])
    return reached


def _prefix(rows: Iterable[Row], version: int | None, at: datetime | None) -> Iterator[Row]:
    for row in rows:
        if (version is not None and row["stream_version"] > version) or (at is not None and row["occurred_at"] > at):
            return
        yield row


class Replay:
    """Folds one stream's rows one at a time and tells the changes each made.

    ``version`` is the last version fed (0 before any). A category without a decider gives
    entries whose ``changes`` is ``None`` and keeps no state.
    """

    def __init__(self, category: str) -> None:
        self.decider = decider_of(category)
        self.state: Any = None if self.decider is None else self.decider.initial_state
        self.version = 0
        self._before: Any = builtins(self.state)

    def feed(self, row: Row) -> HistoryEntry:
        """The entry of ``row`` (the stream's next version), with the changes its event made."""
        self.version = row["stream_version"]
        entry = history_entry(row)
        if self.decider is None:
            return entry
        self.state = self.decider.evolve(self.state, decode_row(row))
        now = builtins(self.state)
        changes, self._before = diff(self._before, now), now
        return msgspec.structs.replace(entry, changes=changes)


def entries_with_changes(category: str, rows: Iterable[Row], *, after: int = 0) -> list[HistoryEntry]:
    """History entries of the rows past version ``after``, each with the changes its event made.

    ``rows`` must start at version 1: the changes need the state before each entry.
    """
    replay = Replay(category)
    return [entry for entry in map(replay.feed, rows) if entry.version > after]


def entries_under(entries: Sequence[HistoryEntry], prefix: str) -> list[HistoryEntry]:
    """The entries that changed something at or below ``prefix``, with only those changes."""
    picked: list[HistoryEntry] = []
    for entry in entries:
        changes = under(entry.changes or [], prefix)
        if changes:
            picked.append(msgspec.structs.replace(entry, changes=changes))
    return picked


def sub_entity(state: Any, collection: str, ident: str) -> Any:
    """``state[collection][ident]`` of a builtins state, or ``None`` when it is not there."""
    found = state.get(collection) if isinstance(state, dict) else None
    return found.get(ident) if isinstance(found, dict) else None


def sub_entity_version(category: str, rows: Iterable[Row], collection: str, ident: str,
                       version: int) -> tuple[StateAt, Any] | None:
    """The first stream state where ``state[collection][ident]["version"] == version``, and that entity.

    ``None`` when the entity never reached that version.
    """
    decider = DECIDERS[category]
    for row, state in fold_steps(decider, rows):
        entity = sub_entity(builtins(state), collection, ident)
        if isinstance(entity, dict) and entity.get("version") == version:
            return StateAt(state, row["stream_version"], row["occurred_at"]), entity
    return None


# ── reading change_log ─────────────────────────────────────────────────────────────────

_ROWS_UPTO = """
SELECT * FROM change_log WHERE stream = $1 AND stream_version <= $2 ORDER BY stream_version"""
# The rows before the first event past ``at``: a prefix of the stream, whatever the clocks did later.
_ROWS_UNTIL = """
SELECT * FROM change_log WHERE stream = $1 AND stream_version < coalesce(
    (SELECT min(stream_version) FROM change_log WHERE stream = $1 AND occurred_at > $2), 9223372036854775807)
ORDER BY stream_version"""
_PAGE = """
SELECT * FROM change_log WHERE stream = $1 AND stream_version > $2 ORDER BY stream_version LIMIT $3"""
_LAST_VERSION = "SELECT max(stream_version) FROM change_log WHERE stream = $1"

#: No bound on a version: larger than any stream ever gets.
NO_BOUND = 2**62


async def load_rows(pool: asyncpg.Pool, stream: str, *, version: int | None = None,
                    at: datetime | None = None) -> list[Row]:
    """The stream's rows from version 1 up to ``version`` (inclusive) and before the first one past ``at``."""
    if at is not None:
        rows: list[Row] = await pool.fetch(_ROWS_UNTIL, stream, at)
        return [r for r in rows if version is None or r["stream_version"] <= version]
    fetched: list[Row] = await pool.fetch(_ROWS_UPTO, stream, NO_BOUND if version is None else version)
    return fetched


async def load_page(pool: asyncpg.Pool, stream: str, after: int, limit: int) -> list[Row]:
    """Up to ``limit`` rows of the stream past version ``after``, in version order."""
    rows: list[Row] = await pool.fetch(_PAGE, stream, after, limit)
    return rows


async def last_version(pool: asyncpg.Pool, stream: str) -> int:
    """The stream's latest version in the read model; 404 ``stream_not_found`` when it has none."""
    found: int | None = await pool.fetchval(_LAST_VERSION, stream)
    if found is None:
        raise NotFound(f"stream {stream!r} has no events", code="stream_not_found")
    return found


async def missing_version(pool: asyncpg.Pool, stream: str, version: int | None, at: datetime | None) -> None:
    """Raise the precise 404: no such stream, or no such version (or nothing yet at ``at``)."""
    latest = await last_version(pool, stream)
    if latest == 0:
        raise NotFound(f"stream {stream!r} has no events", code="stream_not_found")
    if at is not None:
        raise NotFound(f"stream {stream!r} had no events at or before {at.isoformat()}", code="version_not_found")
    raise NotFound(f"stream {stream!r} is at version {latest}; version {version} does not exist",
                   code="version_not_found")


def one_bound(version: int | None, at: datetime | None) -> None:
    """Refuse a time travel asked both by version and by time, or to a time without a UTC offset."""
    if version is not None and at is not None:
        raise InvalidRequest("give either version or at, not both", code="invalid_request")
    if at is not None and at.tzinfo is None:
        raise InvalidRequest(f"at {at.isoformat()!r} has no UTC offset; RFC 3339 times carry one",
                             code="invalid_time")
    if at is not None:
        try:
            at.astimezone(UTC)
        except OverflowError:
            # 9999-12-31T23:59:59-14:00 is a valid RFC 3339 time whose UTC instant is past year 9999.
            raise InvalidRequest(f"at {at.isoformat()!r} is past the last time this API can represent "
                                 f"(9999-12-31T23:59:59.999999Z)", code="invalid_time") from None
