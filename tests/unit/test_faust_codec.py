"""The faust integration's decoding and command client: a record of the log becomes a typed event, and back.

Note: the command client is tested here against an in-process ``httpx.MockTransport`` for its retry
rules only; tests/integration/test_faust.py runs it against a real Blackboard.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from decimal import Decimal

import faust
import httpx
import msgspec
import pytest
from faust.exceptions import ValueDecodeError
from faust.serializers import codecs
from faust.types.tuples import Message

from blackboard.config import Settings
from blackboard.events.codec import to_record
from blackboard.integrations.faust import (
    CODEC_NAME,
    BlackboardEvent,
    BlackboardSchema,
    CommandClient,
    CommandFailed,
    EventsTopic,
    command_id_for,
    decode_message,
    events_topic,
)
from blackboard.schemas.envelope import Envelope
from blackboard.schemas.project import AddCost, CostAdded
from blackboard.schemas.task import TaskCreated
from tests.factories import envelope


def message(env: Envelope, *, partition: int = 2, offset: int = 7,
            headers: Mapping[str, bytes] | None = None) -> Message:
    """The message faust's aiokafka driver hands to a schema for the record the log wrote for ``env``."""
    record = to_record(env)
    given_headers = list(record.headers) if headers is None else headers
    return Message("t.events", partition, offset, (record.timestamp_ms or 0) / 1000, 0, given_headers,
                   record.key, record.value, None)


def test_a_record_becomes_a_typed_event() -> None:
    env = envelope(CostAdded(amount=Decimal("1.50"), reason="render"), stream="project:p-1", version=3)
    event = decode_message(message(env))
    assert event.payload == CostAdded(amount=Decimal("1.50"), reason="render")
    assert (event.stream, event.version, event.type, event.partition, event.offset) == (
        "project:p-1", 3, "project.cost_added", 2, 7)
    assert (event.event_id, event.correlation_id, event.actor) == (env.event_id, "corr-1", "tester")
    assert event.envelope == env and event.occurred_at == env.occurred_at


def test_headers_as_a_mapping_decode_too() -> None:
    env = envelope(CostAdded(amount=Decimal("1"), reason="r"), stream="project:p-1", version=1)
    headers = dict(to_record(env).headers)
    assert decode_message(message(env, headers=headers)).envelope == env


def test_an_older_schema_version_is_upcast() -> None:
    v1 = b'{"name":"render","priority":2,"payload":null}'
    env = envelope(TaskCreated(name="x"), stream="task:t-1", version=1, schema_version=1, payload=v1)
    event = decode_message(message(env))
    assert event.payload == TaskCreated(name="render", priority=2, payload={})


@pytest.mark.parametrize("change", [
    {"type": "project.from_the_future"},
    {"schema_version": 99},
    {"payload": b'{"amount": "not money"'},
])
def test_what_this_build_cannot_decode_is_a_value_decode_error(change: dict[str, object]) -> None:
    env = envelope(CostAdded(amount=Decimal("1"), reason="r"), stream="project:p-1", version=1, **change)
    with pytest.raises(ValueDecodeError, match=r"t\.events\[2\]@7"):
        BlackboardSchema().loads_value(_app(), message(env))


def test_a_foreign_record_is_a_value_decode_error() -> None:
    foreign = Message("t.events", 0, 1, 0.0, 0, [], b"k", b"{}", None)
    with pytest.raises(ValueDecodeError, match="missing headers"):
        BlackboardSchema().loads_value(_app(), foreign)


def test_the_key_is_the_partition_key() -> None:
    env = envelope(CostAdded(amount=Decimal("1"), reason="r"), stream="project:p-9", version=1)
    assert BlackboardSchema().loads_key(_app(), message(env)) == "p-9"


def test_the_codec_round_trips_an_event_with_its_payload_as_written() -> None:
    env = envelope(TaskCreated(name="x"), stream="task:t-1", version=1, schema_version=1,
                   payload=b'{"name":"render","payload":null}')
    event = decode_message(message(env))
    encoded = codecs.dumps(CODEC_NAME, event)
    assert msgspec.json.decode(encoded)["payload"] == {"name": "render", "payload": None}
    assert codecs.loads(CODEC_NAME, encoded) == event


def test_the_codec_refuses_anything_but_an_event() -> None:
    with pytest.raises(TypeError, match="BlackboardEvent"):
        codecs.dumps(CODEC_NAME, {"not": "an event"})


def _event() -> BlackboardEvent:
    return decode_message(message(envelope(TaskCreated(name="x"), stream="task:t-1", version=1)))


def test_the_command_id_of_a_reaction_is_derived_from_the_event() -> None:
    event = _event()
    assert command_id_for(event) == f"faust:{event.event_id}" == command_id_for(event)
    assert command_id_for(event, "budget") == f"budget:{event.event_id}"


async def test_the_client_retries_unavailable_with_the_same_command_id_and_returns_a_rejection() -> None:
    seen: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(msgspec.json.decode(request.content))
        if len(seen) < 3:
            return httpx.Response(503, json={"code": "log_unavailable", "message": "later"})
        return httpx.Response(409, json={"outcome": "rejected", "command_id": seen[-1]["command_id"],
                                         "code": "budget_exceeded", "message": "over"},
                              headers={"Idempotent-Replayed": "true"})

    event = _event()
    async with CommandClient("http://bb.test", backoff=0.001, transport=httpx.MockTransport(answer)) as client:
        result = await client.react(event, "project.add_cost", "project:p-1", AddCost(amount="1.00", reason="t"))
    assert (result.outcome, result.code, result.replayed) == ("rejected", "budget_exceeded", True)
    assert {s["command_id"] for s in seen} == {f"faust:{event.event_id}"} and len(seen) == 3
    assert seen[0]["causation_id"] == event.event_id and seen[0]["payload"] == {
        "amount": "1.00", "reason": "t", "artifact_id": None}


async def test_bad_input_is_not_retried() -> None:
    calls = 0

    def answer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(422, json={"code": "invalid_command", "message": "$.payload.amount"})

    async with CommandClient("http://bb.test", transport=httpx.MockTransport(answer)) as client:
        with pytest.raises(CommandFailed) as failed:
            await client.send("project.add_cost", "project:p-1", {"amount": "x"}, command_id="c-1")
    assert (failed.value.status, failed.value.code, failed.value.retriable, calls) == (
        422, "invalid_command", False, 1)


def _app() -> faust.App:
    # Never started: no broker is contacted.
    return faust.App(f"unit-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1", web_enabled=False)


async def test_the_events_topic_skips_what_it_cannot_decode_and_its_clones_too(
        caplog: pytest.LogCaptureFixture) -> None:
    topic = events_topic(_app(), Settings(topic_prefix="t."))
    clone = topic.clone(is_iterator=True)
    assert topic.get_topic_name() == "t.events" and isinstance(clone, EventsTopic)
    assert clone.on_undecodable == "skip" and not topic.internal
    foreign = Message("t.events", 0, 1, 0.0, 0, [], b"k", b"{}", None)
    with caplog.at_level(logging.ERROR, logger="blackboard.integrations.faust"):
        await clone.on_value_decode_error(ValueDecodeError("t.events[0]@1: missing headers"), foreign)
    assert "t.events[0]@1: missing headers" in caplog.text


async def test_the_events_topic_may_hand_the_error_to_the_agent_instead() -> None:
    clone = events_topic(_app(), "t.events", on_undecodable="raise").clone(is_iterator=True)
    assert isinstance(clone, EventsTopic) and clone.on_undecodable == "raise"
    foreign = Message("t.events", 0, 1, 0.0, 0, [], b"k", b"{}", None)
    await clone.on_value_decode_error(ValueDecodeError("bad"), foreign)
    with pytest.raises(ValueDecodeError, match="bad"):
        await clone.get(timeout=1)


def test_the_old_module_name_still_imports_with_a_deprecation_warning() -> None:
    import importlib
    import sys

    from blackboard.integrations import faust as integration

    sys.modules.pop("blackboard.faust_integration", None)
    with pytest.warns(DeprecationWarning, match=r"blackboard\.integrations\.faust"):
        old = importlib.import_module("blackboard.faust_integration")
    assert old.events_topic is integration.events_topic and old.BlackboardCodec is integration.BlackboardCodec
