"""Time travel: the state at version N is the fold of the stream's first N events.

Streams are built from random command sequences decided by the pure deciders, then turned into
the ``change_log`` rows the projector would write (payloads as the JSON the log holds).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.domain.decider import Context, Rejection
from blackboard.domain.registry import DECIDERS
from blackboard.query_api.history import (
    builtins,
    entries_with_changes,
    fold_at,
    sub_entity,
    sub_entity_version,
)
from blackboard.schemas.changes import apply_changes, same
from blackboard.schemas.registry import COMMAND_TYPES, encode_payload, event_name, schema_version_of

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

SHOT_IDS = st.sampled_from(["s-1", "s-2", "a/b"])
FIELD_VALUES = st.none() | st.integers(0, 3) | st.sampled_from(["draft", "review", "final"])
PROJECT_COMMANDS = st.one_of(
    st.builds(lambda total: ("project.create", {"title": "T", "currency": "EUR", "budget_total": total,
                                                "global_spec": {"style": "noir"}}),
              st.sampled_from(["100.00", "50"])),
    st.builds(lambda amount: ("project.add_cost", {"amount": amount, "reason": "render"}),
              st.sampled_from(["1.50", "20", "60.00"])),
    st.builds(lambda shot: ("project.create_shot", {"shot_id": shot, "fields": {"status": "draft"}}), SHOT_IDS),
    st.builds(lambda shot, patch: ("project.update_shot", {"shot_id": shot, "patch": patch}),
              SHOT_IDS, st.dictionaries(st.sampled_from(["status", "take", "note"]), FIELD_VALUES, max_size=3)),
    st.builds(lambda s: ("project.set_status", {"status": s}), st.sampled_from(["active", "draft", "archived"])),
)
TOKENS = st.integers(1, 3)
TASK_COMMANDS = st.one_of(
    st.just(("task.create", {"name": "render", "priority": 2})),
    st.builds(lambda s: ("task.set_status", {"status": s}),
              st.sampled_from(["claimed", "running", "succeeded", "failed", "cancelled", "pending"])),
    # A claim's moves carry its fencing token; a token drawn at random sometimes holds it and sometimes not.
    st.just(("task.claim", {"node": "n-1"})),
    st.builds(lambda t: ("task.start", {"token": t}), TOKENS),
    st.builds(lambda t: ("task.complete", {"token": t, "result": {"frames": 24}}), TOKENS),
    st.builds(lambda t: ("task.fail", {"token": t, "error": "crashed"}), TOKENS),
    st.builds(lambda s: ("task.override_status", {"status": s, "reason": "operator"}),
              st.sampled_from(["pending", "succeeded", "failed", "cancelled"])),
)


def rows_of(category: str, stream: str, commands: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[Any]]:
    """The events the decider accepts for ``commands`` in turn, and their ``change_log`` rows.

    Each command is decided one minute after the previous one; its events share that time. A shot
    update without ``expected_version`` expects the shot's current version.
    """
    decider = DECIDERS[category]
    state = decider.initial_state
    events: list[Any] = []
    rows: list[dict[str, Any]] = []
    for i, (name, given_body) in enumerate(commands):
        body = dict(given_body)
        if name == "project.update_shot":
            shot = sub_entity(builtins(state), "shots", body["shot_id"])
            body.setdefault("expected_version", shot["version"] if isinstance(shot, dict) else 0)
        try:
            command = msgspec.convert(body, type=COMMAND_TYPES[name][1])
        except (msgspec.ValidationError, ValueError):
            continue
        now = T0 + timedelta(minutes=i)
        decided = decider.decide(state, command, Context(now=now, actor="tester"))
        if isinstance(decided, Rejection):
            continue
        for event in decided:
            state = decider.evolve(state, event)
            events.append(event)
            rows.append(row(stream, len(rows) + 1, event, now))
    return events, rows


def row(stream: str, version: int, event: msgspec.Struct, occurred_at: datetime) -> dict[str, Any]:
    name = event_name(event)
    return {"stream": stream, "stream_version": version, "partition": 0, "offset": version - 1,
            "event_id": str(uuid.uuid4()), "type": name, "schema_version": schema_version_of(name),
            "actor": "tester", "command_id": f"c-{version}", "correlation_id": "corr", "causation_id": "cause",
            "occurred_at": occurred_at, "payload": msgspec.json.decode(encode_payload(event)), "trace_id": None}


def fold_first(category: str, events: list[Any], n: int) -> Any:
    decider = DECIDERS[category]
    state = decider.initial_state
    for event in events[:n]:
        state = decider.evolve(state, event)
    return state


def after_creation(first: tuple[str, dict[str, Any]],
                   rest: st.SearchStrategy[tuple[str, dict[str, Any]]]) -> st.SearchStrategy[Any]:
    """Command lists that start by creating the stream (most others would be refused before it)."""
    return st.lists(rest, max_size=20).map(lambda commands: [first, *commands])


CREATE_PROJECT = ("project.create", {"title": "T", "currency": "EUR", "budget_total": "100"})
CASES = [("project", "project:p-1", after_creation(CREATE_PROJECT, PROJECT_COMMANDS)),
         ("task", "task:t-1", after_creation(("task.create", {"name": "render"}), TASK_COMMANDS))]


@pytest.mark.parametrize(("category", "stream", "commands"), CASES, ids=["project", "task"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_state_at_version_n_is_the_fold_of_the_first_n_events(
        category: str, stream: str, commands: st.SearchStrategy[Any], data: st.DataObject) -> None:
    events, rows = rows_of(category, stream, data.draw(commands))

    for n in range(len(rows) + 1):
        reached = fold_at(category, rows, version=n)
        assert reached.state == fold_first(category, events, n)
        assert reached.version == n
        assert reached.occurred_at == (rows[n - 1]["occurred_at"] if n else None)


@pytest.mark.parametrize(("category", "stream", "commands"), CASES, ids=["project", "task"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_state_at_a_time_holds_every_event_up_to_it(
        category: str, stream: str, commands: st.SearchStrategy[Any], data: st.DataObject) -> None:
    events, rows = rows_of(category, stream, data.draw(commands))
    minutes = data.draw(st.integers(-1, 22))
    at = T0 + timedelta(minutes=minutes, seconds=data.draw(st.sampled_from([0, 30])))

    reached = fold_at(category, rows, at=at)

    upto = sum(1 for r in rows if r["occurred_at"] <= at)
    assert reached.state == fold_first(category, events, upto) and reached.version == upto


@pytest.mark.parametrize(("category", "stream", "commands"), CASES, ids=["project", "task"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_changes_of_every_entry_add_up_to_the_state(
        category: str, stream: str, commands: st.SearchStrategy[Any], data: st.DataObject) -> None:
    events, rows = rows_of(category, stream, data.draw(commands))
    after = data.draw(st.integers(0, len(rows)))

    entries = entries_with_changes(category, rows, after=after)

    assert [e.version for e in entries] == list(range(after + 1, len(rows) + 1))
    state = builtins(fold_first(category, events, after))
    for entry in entries:
        state = apply_changes(state, entry.changes or [])
        assert same(state, builtins(fold_first(category, events, entry.version)))


def test_a_shot_at_its_own_version_is_found_in_the_project_version_that_made_it() -> None:
    _, rows = rows_of("project", "project:p-1", [
        ("project.create", {"title": "T", "currency": "EUR", "budget_total": "10"}),
        ("project.create_shot", {"shot_id": "s-1", "fields": {"status": "draft"}}),
        ("project.add_cost", {"amount": "1", "reason": "r"}),
        ("project.update_shot", {"shot_id": "s-1", "patch": {"status": "review"}}),
    ])
    found = sub_entity_version("project", rows, "shots", "s-1", 2)

    assert found is not None
    reached, shot = found
    assert shot["version"] == 2 and shot["fields"]["status"] == "review"
    assert reached.version == rows[-1]["stream_version"]
    assert sub_entity_version("project", rows, "shots", "s-1", 3) is None


def test_nothing_folded_is_the_initial_state_at_version_zero() -> None:
    reached = fold_at("project", [], version=5)

    assert (reached.state, reached.version, reached.occurred_at) == (DECIDERS["project"].initial_state, 0, None)
