"""Schema evolution: every older event version the log may hold decodes into today's Struct.

``task.created`` version 1 had no skills and no dependencies and let ``payload`` be null; the
registered upcaster turns such an object into version 2 before today's Struct validates it.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.schemas.registry import EVENT_TYPES, UPCASTERS, UnknownEventType, decode_event
from blackboard.schemas.task import TaskCreated, TaskCreatedV1, upcast_task_created_v1

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
v1_events = st.builds(
    TaskCreatedV1,
    name=st.text(min_size=1, max_size=40),
    priority=st.integers(-1000, 1000),
    payload=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)


def test_every_older_version_has_its_upcaster() -> None:
    for name, (_, current) in EVENT_TYPES.items():
        for version in range(1, current):
            assert (name, version) in UPCASTERS, f"{name} v{version} cannot reach v{current}"
    assert EVENT_TYPES["task.created"] == (TaskCreated, 2)


def test_a_v1_task_without_payload_becomes_an_empty_payload_no_skills_no_dependencies() -> None:
    v1 = {"name": "render", "priority": 5, "payload": None}
    assert upcast_task_created_v1(v1) == {"name": "render", "priority": 5, "payload": {},
                                          "required_skills": [], "depends_on": []}
    assert v1 == {"name": "render", "priority": 5, "payload": None}, "the upcaster does not change its input"


def test_a_v1_object_with_omitted_defaults_upcasts() -> None:
    event = decode_event("task.created", 1, b'{"name":"render"}')
    assert event == TaskCreated("render", 0, {}, [], [])


@given(v1_events)
def test_any_v1_task_created_upcasts_to_a_v2_that_decodes(v1: TaskCreatedV1) -> None:
    raw = msgspec.json.encode(v1)
    upcast = upcast_task_created_v1(msgspec.json.decode(raw))
    # The v2 object is valid on its own: today's Struct decodes it as written.
    assert msgspec.json.decode(msgspec.json.encode(upcast), type=TaskCreated) == decode_event("task.created", 1, raw)
    event = decode_event("task.created", 1, raw)
    assert isinstance(event, TaskCreated)
    assert (event.name, event.priority) == (v1.name, v1.priority)
    assert event.payload == (v1.payload if v1.payload is not None else {})
    assert (event.required_skills, event.depends_on) == ([], [])


@given(v1_events)
def test_a_v2_event_decodes_as_written(v1: TaskCreatedV1) -> None:
    v2 = TaskCreated(v1.name, v1.priority, v1.payload or {}, ["gpu"], ["t-0"])
    assert decode_event("task.created", 2, msgspec.json.encode(v2)) == v2


@pytest.mark.parametrize("version", [0, 3, 99])
def test_a_version_this_build_does_not_know_is_an_error_naming_it(version: int) -> None:
    with pytest.raises(UnknownEventType, match=f"task.created schema_version {version} is not in 1..2"):
        decode_event("task.created", version, b'{"name":"render"}')


@pytest.mark.parametrize("raw", [b'["render"]', b'{"name": 5}', b'{"priority": 1}', b"not json"])
def test_a_malformed_v1_object_is_a_decode_error(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_event("task.created", 1, raw)
