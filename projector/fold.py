"""The fold of one batch, without I/O: records decoded, then applied to the rows they touch in log order.

An event applies when it is the next version of its stream and fits the read model; a
repeat of a recorded event (same ``event_id``) is a duplicate; anything else is set aside
with the reason, for the dead letters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from blackboard.events.codec import from_record, stream_header
from blackboard.events.log import StoredRecord
from blackboard.schemas.envelope import Envelope
from blackboard.schemas.merge_patch import merge_patch
from blackboard.schemas.project import CostAdded, ProjectCreated, ShotUpdated
from blackboard.schemas.registry import decode_event
from blackboard.schemas.task import TaskCreated, TaskStatusChanged

# The read model's money columns: at most 20 integer digits and 4 decimals.
_MONEY_LIMIT, _MONEY_STEP = Decimal(10) ** 20, Decimal("0.0001")
_CATEGORY: dict[type[Any], str] = {
    ProjectCreated: "project", CostAdded: "project", ShotUpdated: "project",
    TaskCreated: "task", TaskStatusChanged: "task",
}
_CREATIONS = (ProjectCreated, TaskCreated)


# ── decoding ────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Decoded:
    """A record that decoded into an event of a stream of ``category`` (``project``/``task``) ``ident``."""

    rec: StoredRecord
    env: Envelope
    event: Any
    category: str
    ident: str


@dataclass(frozen=True, slots=True)
class Poison:
    """A record set aside for the dead letters, with the reason.

    ``stream`` is the stream it belongs to when its headers tell (even if its payload does not
    decode): later events of that stream are held behind it. ``held`` says it was set aside only
    because an earlier event of its stream was.
    """

    rec: StoredRecord
    reason: str
    stream: str | None = None
    held: bool = False


Item = Decoded | Poison


def decode(rec: StoredRecord) -> Item:
    """The record's envelope and event, or the reason it is poison."""
    try:
        env = from_record(rec).envelope
    except Exception as exc:  # decoding is pure: whatever fails, fails for this record alone
        return Poison(rec, f"undecodable: {type(exc).__name__}: {exc}", stream_header(rec))
    try:
        event = decode_event(env.type, env.schema_version, env.payload)
    except Exception as exc:
        return Poison(rec, f"undecodable: {type(exc).__name__}: {exc}", env.stream)
    category, _, ident = env.stream.partition(":")
    expected = _CATEGORY.get(type(event))
    if expected is None:
        return Poison(rec, f"{env.type} has no read model to apply to", env.stream)
    if category != expected or not ident:
        return Poison(rec, f"{env.type} does not belong on stream {env.stream!r}", env.stream)
    return Decoded(rec, env, event, category, ident)


def stream_of(item: Item) -> str | None:
    return item.env.stream if isinstance(item, Decoded) else item.stream


# ── the fold: the batch's rows, changed in memory in log order ──────────────────────────


@dataclass(slots=True)
class BatchFold:
    """The rows a batch touches, as loaded, then as its events leave them.

    Note: beyond the stream order and the read model's constraints it trusts the events, as the
    deciders' ``evolve`` does: a shot takes the event's ``shot_version``, a task its ``to_status``.
    """

    projects: dict[str, dict[str, Any]]
    shots: dict[tuple[str, str], dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    #: (stream, version) → event_id of events already in the change log or applied by this batch.
    recorded: dict[tuple[str, int], str]
    #: Streams with a dead letter not yet resolved: their later events are held behind it.
    blocked: set[str] = field(default_factory=set)
    applied: list[Decoded] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    duplicates: int = 0
    changed_shots: dict[tuple[str, str], None] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    #: (category, id) of rows that only took the version of an event an operator gave up on (``skip``).
    stamped: list[tuple[str, str]] = field(default_factory=list)

    def fold(self, item: Item) -> None:
        """Apply one record, or count it as a duplicate, or set it aside with its reason.

        Note: once a record of a stream is set aside, every later record of that stream is set
        aside behind it (``held``), so the stream's read model is never built over a hole.
        """
        if isinstance(item, Poison):
            self._set_aside(item)
            return
        env = item.env
        recorded = self.recorded.get((env.stream, env.stream_version))
        if recorded == env.event_id:
            self.duplicates += 1  # an ambiguous produce wrote it twice; it happened once
            return
        if env.stream in self.blocked:
            self._set_aside(Poison(item.rec, f"held behind an unresolved dead letter of {env.stream}",
                                   env.stream, held=True))
            return
        reason = self._refusal(item, recorded) or self._evolve(item)
        if reason:
            self._set_aside(Poison(item.rec, reason, env.stream))
            return
        self.recorded[(env.stream, env.stream_version)] = env.event_id
        self.event_ids.add(env.event_id)
        self.applied.append(item)

    def _set_aside(self, poison: Poison) -> None:
        if poison.stream is not None and not poison.held and poison.stream in self.blocked:
            poison = Poison(poison.rec, f"{poison.reason} (and held behind an earlier dead letter)", poison.stream,
                            held=True)
        self.poison.append(poison)
        if poison.stream is not None:
            self.blocked.add(poison.stream)

    def skip(self, item: Item) -> None:
        """Give up on ``item`` for good: its stream's row takes its version, its content does not change.

        Note: so the events after it are the next versions again and can be released. It needs the
        envelope (a payload that does not decode is fine); when the row is not exactly one version
        behind, or the envelope is unreadable, there is nothing to move.
        """
        try:
            env = item.env if isinstance(item, Decoded) else from_record(item.rec).envelope
        except Exception:
            return
        category, _, ident = env.stream.partition(":")
        rows = {"project": self.projects, "task": self.tasks}.get(category)
        row = rows.get(ident) if rows is not None else None
        if row is not None and row["version"] == env.stream_version - 1:
            row |= {"version": env.stream_version, "partition": item.rec.partition, "last_offset": item.rec.offset,
                    "updated_at": occurred_at(env)}
            self.stamped.append((category, ident))

    def _refusal(self, item: Decoded, recorded: str | None) -> str | None:
        env = item.env
        if recorded is not None:
            return f"{env.stream} version {env.stream_version} is event {recorded}, not {env.event_id}"
        if env.event_id in self.event_ids:
            return f"event_id {env.event_id} was already applied by another event of this batch"
        row = (self.projects if item.category == "project" else self.tasks).get(item.ident)
        creation = isinstance(item.event, _CREATIONS)
        if row is None and not creation:
            return f"{item.category} {item.ident!r} does not exist; {env.type} cannot apply"
        if row is not None and creation:
            return f"{item.category} {item.ident!r} already exists at version {row['version']}"
        current = row["version"] if row else 0
        if env.stream_version != current + 1:
            return f"{env.stream} is at version {current}; version {env.stream_version} is not the next"
        return None

    def _evolve(self, item: Decoded) -> str | None:
        match item.event:
            case ProjectCreated() as e:
                return self._project_created(item, e)
            case CostAdded() as e:
                return self._cost_added(item, e)
            case ShotUpdated() as e:
                return self._shot_updated(item, e)
            case TaskCreated() as e:
                self.tasks[item.ident] = {
                    # Version 2 made "no payload" {}; the row keeps it NULL, as version 1 wrote it.
                    "id": item.ident, "name": e.name, "priority": e.priority, "payload": e.payload or None,
                    "status": "pending", "created_at": occurred_at(item.env),
                } | _stamp(item)
            case TaskStatusChanged() as e:
                self.tasks[item.ident] |= {"status": e.to_status} | _stamp(item)
        return None

    def _project_created(self, item: Decoded, e: ProjectCreated) -> str | None:
        if not _is_money(e.budget_total):
            return f"budget_total {e.budget_total} is not an amount of 0 or more with at most 4 decimals"
        self.projects[item.ident] = {
            "id": item.ident, "title": e.title, "currency": e.currency, "budget_total": e.budget_total,
            "spent": Decimal(0), "global_spec": e.global_spec, "created_at": occurred_at(item.env),
        } | _stamp(item)
        return None

    def _cost_added(self, item: Decoded, e: CostAdded) -> str | None:
        row = self.projects[item.ident]
        spent = row["spent"] + e.amount
        if not (_is_money(e.amount) and _is_money(spent) and spent <= row["budget_total"]):
            return f"cost {e.amount} takes spent from {row['spent']} to {spent}, outside 0..{row['budget_total']}"
        row |= {"spent": spent} | _stamp(item)
        return None

    def _shot_updated(self, item: Decoded, e: ShotUpdated) -> str | None:
        key = (item.ident, e.shot_id)
        fields = merge_patch(self.shots[key]["fields"] if key in self.shots else {}, e.patch)
        self.shots[key] = {"project_id": item.ident, "shot_id": e.shot_id, "fields": fields,
                           "version": e.shot_version, "updated_at": occurred_at(item.env)}
        self.changed_shots[key] = None
        self.projects[item.ident] |= _stamp(item)
        return None

    def changed(self, category: str) -> list[dict[str, Any]]:
        """The rows of ``category`` this batch's applied events changed, once each."""
        rows = self.projects if category == "project" else self.tasks
        idents = dict.fromkeys([*(e.ident for e in self.applied if e.category == category),
                                *(i for c, i in self.stamped if c == category)])
        return [rows[i] for i in idents]


def _stamp(item: Decoded) -> dict[str, Any]:
    """The columns every event sets on its stream's row."""
    return {"version": item.env.stream_version, "partition": item.rec.partition,
            "last_offset": item.rec.offset, "updated_at": occurred_at(item.env)}


def occurred_at(env: Envelope) -> datetime:
    """When the event happened, as an aware time (a naive one in a header is taken as UTC)."""
    at: datetime = env.occurred_at
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _is_money(value: Decimal) -> bool:
    """Whether ``value`` fits the read model's money columns exactly and is not negative."""
    return value.is_finite() and 0 <= value < _MONEY_LIMIT and value == value.quantize(_MONEY_STEP)


def touched(events: Iterable[Decoded]) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """The project ids, (project id, shot id) pairs and task ids a batch's events touch."""
    projects: dict[str, None] = {}
    shots: dict[tuple[str, str], None] = {}
    tasks: dict[str, None] = {}
    for ev in events:
        (projects if ev.category == "project" else tasks)[ev.ident] = None
        if isinstance(ev.event, ShotUpdated):
            shots[(ev.ident, ev.event.shot_id)] = None
    return list(projects), list(shots), list(tasks)
