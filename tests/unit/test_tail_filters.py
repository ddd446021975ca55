"""The pure parts of ``blackboard tail``: which offsets, which events, and how each format shows them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from blackboard.events.codec import to_record
from blackboard.events.log import StoredRecord
from blackboard.ops.tail import Decoded, Filter, Span, as_json, as_raw, as_text, decode, matches, parse_time, plan
from blackboard.schemas import project
from blackboard.schemas.registry import EVENT_TYPES, UPCASTERS
from tests.factories import OCCURRED_AT, envelope, stored

COST = project.CostAdded(amount=Decimal("12.50"), reason="render")


def event(offset: int = 7, **overrides: Any) -> StoredRecord:
    env = envelope(COST, stream="project:p-1", version=3, **overrides)
    return stored(to_record(env), topic="events", partition=2, offset=offset)


def garbage(offset: int = 8) -> StoredRecord:
    return StoredRecord("events", 2, offset, b"p-1", b"\xff\xfe", (("type", b"x"),), 1_700_000_000_000)


# ── plan ────────────────────────────────────────────────────────────────────────────────


def test_by_default_only_what_is_appended_from_now_is_read() -> None:
    assert plan({0: 5, 1: 0}) == [Span(0, 5, 5), Span(1, 0, 0)]
    assert plan({0: 5, 1: 0}, follow=True) == [Span(0, 5, None), Span(1, 0, None)]


def test_the_last_records_of_each_partition_then_what_is_appended() -> None:
    assert plan({0: 15, 1: 3}, last=10) == [Span(0, 5, 15), Span(1, 0, 3)]
    assert plan({0: 15}, last=10, follow=True) == [Span(0, 5, None)]
    assert plan({0: 15}, last=10, from_beginning=True) == [Span(0, 0, 15)]
    assert plan({0: 15}, last=10, from_offset=12) == [Span(0, 12, 15)]


def test_from_the_beginning_to_the_ends_seen_at_the_start() -> None:
    assert plan({0: 5, 1: 2}, from_beginning=True) == [Span(0, 0, 5), Span(1, 0, 2)]


def test_one_partition_an_offset_range_and_a_followed_range() -> None:
    assert plan({0: 5, 1: 9}, partition=1, from_offset=3, to_offset=6) == [Span(1, 3, 6)]
    assert plan({0: 5}, from_offset=2, to_offset=50) == [Span(0, 2, 5)], "without --follow the end caps the range"
    assert plan({0: 5}, from_offset=2, to_offset=50, follow=True) == [Span(0, 2, 50)]


def test_an_unknown_partition_is_refused_with_the_range_that_exists() -> None:
    with pytest.raises(ValueError, match=r"partition 4 does not exist; the topic has partitions 0..1"):
        plan({0: 1, 1: 1}, partition=4)


# ── filters ─────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("condition", "expected"), [
    (Filter(), True),
    (Filter(stream="project:p-1"), True),
    (Filter(stream="project:p-2"), False),
    (Filter(type="project.cost_added"), True),
    (Filter(type="project.created"), False),
    (Filter(actor="tester"), True),
    (Filter(actor="someone"), False),
    (Filter(correlation_id="corr-1"), True),
    (Filter(correlation_id="corr-2"), False),
    (Filter(stream="project:p-1", actor="someone"), False),
    (Filter(since=OCCURRED_AT), True),
    (Filter(since=OCCURRED_AT + timedelta(microseconds=1)), False),
    (Filter(until=OCCURRED_AT), False),
    (Filter(until=OCCURRED_AT + timedelta(microseconds=1)), True),
])
def test_every_condition_must_hold(condition: Filter, expected: bool) -> None:
    assert matches(condition, decode(event())) is expected


def test_a_record_that_is_no_event_passes_every_filter() -> None:
    assert matches(Filter(stream="project:p-2", type="nothing", since=OCCURRED_AT), decode(garbage()))


def test_times_are_iso_8601_and_default_to_utc() -> None:
    assert parse_time("2025-01-02T03:04:05Z") == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("2025-01-02T03:04:05") == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_time("2025-01-02T05:04:05+02:00") == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="'yesterday' is not an ISO-8601 time"):
        parse_time("yesterday")


# ── decoding and formats ────────────────────────────────────────────────────────────────


def test_json_has_position_every_envelope_field_and_the_stored_payload() -> None:
    doc = as_json(decode(event()))
    assert (doc["partition"], doc["offset"], doc["stream"], doc["stream_version"]) == (2, 7, "project:p-1", 3)
    assert doc["occurred_at"] == "2025-01-02T03:04:05.678000Z"
    assert doc["payload"] == {"amount": "12.50", "reason": "render", "artifact_id": None}
    expected = {"event_id", "type", "schema_version", "command_id", "correlation_id", "causation_id", "actor",
                "writer_epoch", "partition_key", "command_hash"}
    assert expected <= doc.keys()
    assert "upcast" not in doc and "undecodable" not in doc
    msgspec.json.encode(doc)


def test_an_older_schema_version_shows_the_stored_and_the_upcast_payload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EVENT_TYPES, "project.cost_added", (project.CostAdded, 2))
    monkeypatch.setitem(UPCASTERS, ("project.cost_added", 1), lambda old: {**old, "reason": old["reason"].upper()})
    item = decode(event(schema_version=1))
    doc = as_json(item)
    assert (doc["schema_version"], doc["current_schema_version"]) == (1, 2)
    assert doc["payload"]["reason"] == "render" and doc["upcast"]["reason"] == "RENDER"
    assert "↑ as v2" in as_text(item) and '"RENDER"' in as_text(item)
    current = decode(event(schema_version=2))
    assert current.upcast is None and "upcast" not in as_json(current)


def test_undecodable_records_carry_the_reason_in_every_format() -> None:
    item = decode(garbage())
    assert item.envelope is None and item.error is not None and "missing headers" in item.error
    doc = as_json(item)
    assert doc["undecodable"] == item.error and (doc["partition"], doc["offset"]) == (2, 8)
    assert doc["value"] == {"encoding": "base64", "data": base64.b64encode(b"\xff\xfe").decode()}
    assert as_text(item).startswith("[dim]2:8[/] [red]undecodable: missing headers")


def test_an_event_whose_payload_does_not_fit_its_type_is_undecodable_but_keeps_its_envelope() -> None:
    bad = decode(event(payload=b'{"amount": "lots"}'))
    assert bad.envelope is not None and bad.error is not None and "ValidationError" in bad.error
    doc = as_json(bad)
    assert doc["payload"] == {"amount": "lots"} and doc["stream"] == "project:p-1" and "undecodable" in doc
    assert "[red]undecodable: ValidationError" in as_text(bad)
    unknown = decode(event(type="project.renamed"))
    assert unknown.error == "UnknownEventType: unknown event type 'project.renamed'"
    not_json = decode(event(payload=b"{nope"))
    assert not_json.error is not None and not_json.error.startswith("payload is not JSON")


def test_raw_shows_key_headers_and_value_as_stored() -> None:
    doc = as_raw(event())
    assert doc["key"] == {"encoding": "text", "data": "p-1"}
    assert ["stream", {"encoding": "text", "data": "project:p-1"}] in doc["headers"]
    assert msgspec.json.decode(doc["value"]["data"]) == {"amount": "12.50", "reason": "render", "artifact_id": None}
    assert as_raw(garbage())["value"] == {"encoding": "base64", "data": "//4="}


def test_text_escapes_markup_in_values() -> None:
    text = as_text(decode(event(actor="[bold]mallory")))
    assert "actor=\\[bold]mallory" in text


def test_decoded_is_built_from_the_record_alone() -> None:
    item = decode(event())
    assert item == Decoded(item.record, item.envelope, item.payload, None, 1)
