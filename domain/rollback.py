"""Taking an agent run back, per stream: which fields the run changed, which of them others changed since,
and the compensating commands each aggregate proposes. Pure: the caller reads the events and sends the commands.

A stream's events are walked once with its decider. Each event's changes (``schemas.changes.diff`` of
the states around it) are grouped into *units*, the pieces an aggregate can put back by one command
(a shot field, a DNA entry, the spec's top-level key, the status…). For each unit the run touched:

* ``before`` is its value just before the run's first event that touched it;
* it *conflicts* when an event of anyone else touched it after that (its later value is not the run's);
* it is *done* when an event of the rollback itself touched it after the run (a rollback repeated).

Why not ``compensate(state_before, state_after, events)`` alone: the state after the run holds the
changes of everyone who wrote in between, and which unit to leave alone depends on who touched it
after the run. So the walk gives each compensator the units with their provenance, the current state
and the run's own events (for what is counted rather than set: money spent and reserved).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

from blackboard.domain.decider import Decider
from blackboard.schemas.changes import diff, same, unescape
from blackboard.schemas.runs import Conflict, PlannedCommand, Unrestorable
from blackboard.schemas.views import FieldChange

Role = Literal["run", "other", "rollback"]
#: JSON Pointer lookup of a value that is not there.
ABSENT: Any = msgspec.UNSET


class Step(NamedTuple):
    """One event of the stream, in version order, with who sent it and whether it is the run's."""

    event: msgspec.Struct
    actor: str
    role: Role


class Touch(msgspec.Struct):
    """A unit the run changed: its value before the run, after the run's last touch, and now."""

    unit: str
    before: Any
    run_value: Any = ABSENT
    current: Any = ABSENT
    others: list[str] = []
    done: bool = False


class Proposal(NamedTuple):
    """A compensating command an aggregate proposes: ``key`` names the step within the stream."""

    key: str
    type: str
    payload: dict[str, Any]
    changes: list[FieldChange]


class Compensation(NamedTuple):
    proposals: list[Proposal]
    unrestorable: list[Unrestorable]


class Compensator(Protocol):
    """One aggregate's compensation: how its changes group into units, and the commands that put them back."""

    def unit_of(self, path: str) -> str | None:
        """The unit a changed path belongs to, or ``None`` when no field command restores it."""
        ...

    def compensate(self, stream: str, now: Any, touches: Sequence[Touch], run_events: Sequence[Any],
                   repeated: bool) -> Compensation:
        """The commands that put ``touches`` back (none of them conflicting or done) in state ``now``.

        ``run_events`` are the run's events on the stream; ``repeated`` says a rollback of the run has
        already written to it (what is counted, not set, such as money, is then not counted again).
        """
        ...


class StreamPlan(NamedTuple):
    commands: list[PlannedCommand]
    conflicts: list[Conflict]
    unrestorable: list[Unrestorable]


def lookup(doc: Any, pointer: str) -> Any:
    """The value at JSON Pointer ``pointer`` of a builtins document, or ``ABSENT``."""
    value = doc
    for token in pointer.split("/")[1:]:
        if not isinstance(value, dict):
            return ABSENT
        value = value.get(unescape(token), ABSENT)
        if value is ABSENT:
            return ABSENT
    return value


def builtins(state: Any) -> Any:
    return {} if state is None else msgspec.to_builtins(state)


def touches(decider: Decider[Any, Any, Any], steps: Iterable[Step],
            unit_of: Callable[[str], str | None]) -> tuple[Any, dict[str, Touch]]:
    """The stream's state after every step, and the units the run touched (in the order it first did)."""
    state = decider.initial_state
    found: dict[str, Touch] = {}
    for step in steps:
        before = builtins(state)
        state = decider.evolve(state, step.event)
        after = builtins(state)
        units = dict.fromkeys(u for c in diff(before, after) if (u := unit_of(c.path)) is not None)
        for unit in units:
            touch = found.get(unit)
            if step.role == "run":
                if touch is None:
                    touch = found[unit] = Touch(unit, lookup(before, unit))
                touch.run_value = lookup(after, unit)
            elif touch is not None and step.role == "rollback":
                touch.done = True
            elif touch is not None and step.actor not in touch.others:
                touch.others.append(step.actor)
    now = builtins(state)
    for touch in found.values():
        touch.current = lookup(now, touch.unit)
    return state, found


def _shown(value: Any) -> Any:
    return None if value is ABSENT else value


def _unchanged(t: Touch) -> bool:
    """The unit holds its value from before the run again (the run put it back itself): nothing to do."""
    return t.current is t.before is ABSENT or (t.current is not ABSENT and t.before is not ABSENT
                                                and same(t.current, t.before))


def command_id(run_id: str, stream: str, proposal: Proposal) -> str:
    """The id of a compensating command: the same run, stream, step and payload give the same id, so
    sending it again is answered from memory and appends nothing."""
    canonical = msgspec.json.encode([run_id, stream, proposal.key, proposal.type, proposal.payload], order="sorted")
    return "rb-" + hashlib.sha256(canonical).hexdigest()[:40]


def rollback_id(run_id: str) -> str:
    """The correlation id of a run's rollback: one per run, so a repeated rollback is recognised as itself."""
    return "rollback-" + hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def plan_stream(run_id: str, stream: str, decider: Decider[Any, Any, Any], compensator: Compensator,
                steps: Sequence[Step], *, overwrite: bool = False) -> StreamPlan:
    """The compensating commands of the run on one stream, and the conflicts (skipped unless ``overwrite``)."""
    now, found = touches(decider, steps, compensator.unit_of)
    conflicts = [Conflict(stream, t.unit, _shown(t.before), _shown(t.run_value), _shown(t.current), t.others)
                 for t in found.values() if t.others and not t.done]
    chosen = [t for t in found.values() if not t.done and (overwrite or not t.others) and not _unchanged(t)]
    run_events = [s.event for s in steps if s.role == "run"]
    repeated = any(s.role == "rollback" for s in steps)
    comp = compensator.compensate(stream, now, chosen, run_events, repeated)
    commands = [PlannedCommand(stream, p.type, p.payload, command_id(run_id, stream, p), p.changes)
                for p in comp.proposals]
    return StreamPlan(commands, conflicts, comp.unrestorable)
