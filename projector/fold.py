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

from blackboard.domain import project as project_decider
from blackboard.events.codec import PassedOver, from_record, stream_header
from blackboard.events.log import StoredRecord
from blackboard.projector.tables import STATE_TABLES
from blackboard.schemas import project as project_events
from blackboard.schemas.envelope import Envelope
from blackboard.schemas.registry import decode_event

# The read model's money columns: at most 20 integer digits and 4 decimals.
_MONEY_LIMIT, _MONEY_STEP = Decimal(10) ** 20, Decimal("0.0001")
_CATEGORY: dict[type[Any], str] = {cls: "project" for cls in project_events.ProjectEvent.__args__}
#: The events that must open a stream of the category.
_CREATIONS: dict[str, tuple[type[Any], ...]] = {
    "project": (project_events.ProjectCreated,),
    **{category: table.opener for category, table in STATE_TABLES.items() if table.opener},
}


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


@dataclass(slots=True)
class Passed:
    """A record every fold passes over (an ownership marker, a fenced write): its offset counts, nothing applies."""

    rec: StoredRecord
    reason: str


Item = Decoded | Poison | Passed


def decode(rec: StoredRecord) -> Item:
    """The record's envelope and event, or the reason it is poison."""
    try:
        env = from_record(rec).envelope
    except PassedOver as exc:
        return Passed(rec, str(exc))
    except Exception as exc:  # decoding is pure: whatever fails, fails for this record alone
        return Poison(rec, f"undecodable: {type(exc).__name__}: {exc}", stream_header(rec))
    try:
        event = decode_event(env.type, env.schema_version, env.payload)
    except Exception as exc:
        return Poison(rec, f"undecodable: {type(exc).__name__}: {exc}", env.stream)
    category, _, ident = env.stream.partition(":")
    expected = _CATEGORY.get(type(event))
    if expected is None and env.type.partition(".")[0] in STATE_TABLES:
        expected = env.type.partition(".")[0]  # state tables' events are named after their category
    if expected is None:
        return Poison(rec, f"{env.type} has no read model to apply to", env.stream)
    if category != expected or not ident:
        return Poison(rec, f"{env.type} does not belong on stream {env.stream!r}", env.stream)
    return Decoded(rec, env, event, category, ident)


def stream_of(item: Item) -> str | None:
    if isinstance(item, Passed):
        return None
    return item.env.stream if isinstance(item, Decoded) else item.stream


# ── the fold: the batch's rows, changed in memory in log order ──────────────────────────


@dataclass(slots=True)
class BatchFold:
    """The rows a batch touches, as loaded, then as its events leave them.

    Note: projects are folded with their decider's own ``evolve`` (the row keeps the
    state it returns, and every other column is derived from that state), so the read model shows
    exactly what the decisions saw. Beyond the stream order and the money limits of the columns it
    trusts the events, as ``evolve`` does.
    """

    #: Project rows, each with its decider state under ``"state"`` (a ``Project``).
    projects: dict[str, dict[str, Any]]
    #: (stream, version) → event_id of events already in the change log or applied by this batch.
    recorded: dict[tuple[str, int], str]
    #: Rows of the state tables (``STATE_TABLES``) by category, then id; each keeps its state under ``"state"``.
    states: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: Insert-only rows the state tables' events add beside their rows: ``(table, row)``.
    extra_rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: The version of streams without a row whose first records an operator skipped (``skip``), by stream.
    floors: dict[str, int] = field(default_factory=dict)
    #: Streams with a dead letter not yet resolved: their later events are held behind it.
    blocked: set[str] = field(default_factory=set)
    applied: list[Decoded] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    duplicates: int = 0
    #: Records passed over (ownership markers, fenced writes).
    passed: int = 0
    #: (project id, shot id) and (project id, artifact id) of the shots and artifacts the batch changed.
    changed_shots: dict[tuple[str, str], None] = field(default_factory=dict)
    new_artifacts: dict[tuple[str, str], None] = field(default_factory=dict)
    #: When each changed shot was first touched in this batch, and the creation time/version of new artifacts.
    shot_times: dict[tuple[str, str], tuple[datetime, datetime]] = field(default_factory=dict)
    artifact_rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    #: The ids of the rows the batch changed, by category, in the order first changed: by an applied event,
    #: or only stamped with the version of an event an operator gave up on (``skip``).
    _changed: dict[str, dict[str, None]] = field(default_factory=dict)

    def fold(self, item: Item) -> None:
        """Apply one record, or count it as a duplicate, or set it aside with its reason.

        Note: once a record of a stream is set aside, every later record of that stream is set
        aside behind it (``held``), so the stream's read model is never built over a hole.
        """
        if isinstance(item, Poison):
            self._set_aside(item)
            return
        if isinstance(item, Passed):
            self.passed += 1
            return
        env = item.env
        key = (env.stream, env.stream_version)
        recorded = self.recorded.get(key)
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
        self.recorded[key] = env.event_id
        self.event_ids.add(env.event_id)
        self.applied.append(item)
        self._changed.setdefault(item.category, {})[item.ident] = None

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
        behind, or the envelope is unreadable, there is nothing to move. A stream without a row has
        no row to stamp: skipping its first record (or the next after those skipped) moves its
        ``floors`` entry instead, so the record that opens it may be version 2. That entry is never
        written: every fold rebuilds it from the letters marked ``skipped`` (``rows.load``), which
        the live projector and a rebuild record alike, so both apply the next version identically.
        """
        try:
            env = item.env if isinstance(item, Decoded) else from_record(item.rec).envelope
        except Exception:
            return
        category, _, ident = env.stream.partition(":")
        rows = self.rows(category)
        row = rows.get(ident) if rows is not None else None
        if row is None and rows is not None and self.floors.get(env.stream, 0) == env.stream_version - 1:
            self.floors[env.stream] = env.stream_version
        if row is not None and row["version"] == env.stream_version - 1:
            row |= {"version": env.stream_version, "partition": item.rec.partition, "last_offset": item.rec.offset,
                    "updated_at": occurred_at(env)}
            self._changed.setdefault(category, {})[ident] = None

    def _refusal(self, item: Decoded, recorded: str | None) -> str | None:
        env = item.env
        if recorded is not None:
            return f"{env.stream} version {env.stream_version} is event {recorded}, not {env.event_id}"
        if env.event_id in self.event_ids:
            return f"event_id {env.event_id} was already applied by another event of this batch"
        rows = self.rows(item.category)
        assert rows is not None
        row = rows.get(item.ident)
        opener = _CREATIONS.get(item.category)
        creation = opener is not None and isinstance(item.event, opener)
        if row is None and opener and not creation:
            return f"{item.category} {item.ident!r} does not exist; {env.type} cannot apply"
        if row is not None and creation:
            return f"{item.category} {item.ident!r} already exists at version {row['version']}"
        current = row["version"] if row else self.floors.get(env.stream, 0)
        if env.stream_version != current + 1:
            return f"{env.stream} is at version {current}; version {env.stream_version} is not the next"
        return None

    def rows(self, category: str) -> dict[str, dict[str, Any]] | None:
        """The rows of ``category`` this batch holds, by id (``None`` for a category without a read model)."""
        if category in STATE_TABLES:
            return self.states.setdefault(category, {})
        return self.projects if category == "project" else None

    def _evolve(self, item: Decoded) -> str | None:
        table = STATE_TABLES.get(item.category)
        if table is not None:
            return self._state_event(table, item)
        return self._project_event(item) if item.category == "project" else None

    def _project_event(self, item: Decoded) -> str | None:
        row = self.projects.get(item.ident)
        before = row["state"] if row else None
        state = project_decider.evolve(before, item.event)
        if state is None:
            return f"{item.env.type} cannot apply to project {item.ident!r}"
        # ``evolve`` keeps the very budget object when an event leaves the money alone.
        reason = _money_refusal(state) if before is None or state.budget is not before.budget else None
        if reason:
            return reason
        at = occurred_at(item.env)
        if row is None:
            row = self.projects[item.ident] = {"id": item.ident, "created_at": at}
        # The columns derived from the state are computed once per row written (``changed``), not per event.
        row["state"] = state
        _stamp_row(row, item, at)
        match item.event:
            case project_events.ShotCreated(shot_id=shot_id) | project_events.ShotUpdated(shot_id=shot_id):
                self.changed_shots[(item.ident, shot_id)] = None
                first = self.shot_times.get((item.ident, shot_id), (at, at))[0]
                self.shot_times[(item.ident, shot_id)] = (first, at)
            case project_events.ArtifactRegistered(artifact_id=artifact_id):
                self.new_artifacts[(item.ident, artifact_id)] = None
                self.artifact_rows[(item.ident, artifact_id)] = {
                    "created_at": at, "version": item.env.stream_version}
        return None

    def _state_event(self, table: Any, item: Decoded) -> str | None:
        rows = self.states.setdefault(item.category, {})
        row = rows.get(item.ident)
        state = table.evolve(row["state"] if row else table.initial, item.event)
        if state is None:
            return f"{item.env.type} cannot apply to {item.category} {item.ident!r}"
        if row is None:
            row = rows[item.ident] = {table.key: item.ident, "created_at": occurred_at(item.env)}
        # The derived columns are computed once per row when it is written (``tables.upsert``), not per event.
        row["state"] = state
        _stamp_row(row, item, occurred_at(item.env))
        if table.extra is not None:
            self.extra_rows.extend(table.extra(item.ident, item.event, state, item.env))
        return None

    def shot_rows(self) -> list[dict[str, Any]]:
        """The ``shots`` rows of the shots this batch changed, from their projects' states."""
        rows = []
        for key in self.changed_shots:
            shot = self.projects[key[0]]["state"].shots[key[1]]
            first, last = self.shot_times[key]
            rows.append({"project_id": key[0], "shot_id": key[1], "fields": shot.fields, "version": shot.version,
                         "created_at": first, "updated_at": last})
        return rows

    def artifact_rows_new(self) -> list[dict[str, Any]]:
        """The ``artifacts`` rows of the artifacts this batch registered."""
        rows = []
        for key in self.new_artifacts:
            a = self.projects[key[0]]["state"].artifacts[key[1]]
            rows.append({"project_id": key[0], "artifact_id": key[1], "kind": a.kind, "uri": a.uri,
                         "params": a.params, "cost": a.cost, "shot_id": a.shot_id, "task_id": a.task_id,
                         "reservation_id": a.reservation_id, "created_by": a.by} | self.artifact_rows[key])
        return rows

    def changed(self, category: str) -> list[dict[str, Any]]:
        """The rows of ``category`` this batch's applied events changed, once each."""
        rows = self.rows(category)
        assert rows is not None
        changed = [rows[i] for i in self._changed.get(category, ())]
        if category == "project":
            for row in changed:
                row |= project_columns(row["state"])
        return changed


def _stamp_row(row: dict[str, Any], item: Decoded, at: datetime) -> None:
    """Set the columns every event sets on its stream's row (in place: the fold's hot path makes no dict)."""
    row["version"] = item.env.stream_version
    row["partition"] = item.rec.partition
    row["last_offset"] = item.rec.offset
    row["updated_at"] = at


def occurred_at(env: Envelope) -> datetime:
    """When the event happened, as an aware time (a naive one in a header is taken as UTC)."""
    at: datetime = env.occurred_at
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _is_money(value: Decimal) -> bool:
    """Whether ``value`` fits the read model's money columns exactly and is not negative."""
    return value.is_finite() and 0 <= value < _MONEY_LIMIT and value == value.quantize(_MONEY_STEP)


def touched(events: Iterable[Decoded]) -> dict[str, list[str]]:
    """The ids of the rows a batch's events touch, by category (``project`` and the state tables')."""
    found: dict[str, dict[str, None]] = {"project": {}, **{c: {} for c in STATE_TABLES}}
    for ev in events:
        found.setdefault(ev.category, {})[ev.ident] = None
    return {category: list(ids) for category, ids in found.items()}


def project_columns(state: project_decider.Project) -> dict[str, Any]:
    """The columns of a project row derived from its decider state."""
    budget = state.budget
    return {
        "state": state, "title": state.title, "status": state.status, "currency": state.currency,
        "budget_total": budget.total, "spent": budget.spent, "reserved": budget.reserved,
        "global_spec": state.spec.doc, "spec_version": state.spec.version,
        "dna": {k: e for k, e in state.dna.items() if e.value is not None},
        "reservations": state.reservations,
    }


def _money_refusal(state: project_decider.Project) -> str | None:
    """Why the read model cannot show ``state``'s budget (outside its columns, or overcommitted), or ``None``."""
    b = state.budget
    amounts = {"budget_total": b.total, "spent": b.spent, "reserved": b.reserved}
    for name, amount in amounts.items():
        if not _is_money(amount):
            return f"{name} {amount} is not an amount of 0 or more with at most 4 decimals"
    if b.spent + b.reserved > b.total:
        return f"spent {b.spent} + reserved {b.reserved} is more than the total {b.total}"
    return None
