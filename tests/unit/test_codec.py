"""Envelope ↔ record: every field survives; every malformed record says why it is not an event."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.events.codec import (
    OwnershipMarker,
    PassedOver,
    UndecodableRecord,
    fenced,
    from_record,
    marker_of,
    ownership_marker,
    passed_over,
    to_record,
)
from blackboard.events.log import Record, StoredRecord
from blackboard.events.tracing import event_span_context, event_trace_id
from blackboard.schemas.envelope import Envelope

text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
hex_digits = st.text("0123456789abcdef", min_size=1)
traceparents = st.builds("00-{}-{}-{}".format, hex_digits.map(lambda h: h.zfill(32)[:32]),
                         hex_digits.map(lambda h: h.zfill(16)[:16]), st.sampled_from(["00", "01"]))
envelopes = st.builds(
    Envelope, event_id=text, stream=text, stream_version=st.integers(1, 2**40), type=text,
    schema_version=st.integers(1, 9),
    occurred_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    command_id=text, correlation_id=text, causation_id=text, actor=text, writer_epoch=st.integers(0, 2**31),
    partition_key=text, payload=st.binary(max_size=200), command_hash=st.text(max_size=64),
    traceparent=st.none() | traceparents, tracestate=st.none() | st.just("vendor=opaque,other=1"),
    tenant=st.none() | st.sampled_from(["default", "acme", "tenant-b.eu"]),
)


def stored(env: Envelope, **changes: object) -> StoredRecord:
    r = to_record(env)
    return msgspec.structs.replace(StoredRecord("events", 3, 42, r.key, r.value, r.headers, 0), **changes)


@given(envelopes)
def test_round_trip(env: Envelope) -> None:
    back = from_record(stored(env))
    assert back.envelope == env and (back.partition, back.offset) == (3, 42)


SAMPLE = Envelope(event_id="e", stream="project:p", stream_version=1, type="project.created", schema_version=1,
                  occurred_at=datetime(2026, 1, 1, tzinfo=UTC), command_id="c", correlation_id="c",
                  causation_id="c", actor="a", writer_epoch=1, partition_key="p", payload=b"{}")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"key": None}, "no key"),
    ({"value": None}, "no value"),
    ({"headers": ()}, "missing headers"),
    ({"headers": (("event_id", b"\xff"),)}, "not UTF-8"),
])
def test_undecodable_records_say_why(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(UndecodableRecord, match=reason):
        from_record(stored(SAMPLE, **changes))


def test_a_bad_integer_header_is_named() -> None:
    headers = tuple((k, b"x" if k == "stream_version" else v) for k, v in to_record(SAMPLE).headers)
    with pytest.raises(UndecodableRecord, match="malformed"):
        from_record(stored(SAMPLE, headers=headers))


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_the_trace_context_travels_as_w3c_headers() -> None:
    env = msgspec.structs.replace(SAMPLE, traceparent=TRACEPARENT, tracestate="vendor=opaque")
    headers = dict(to_record(env).headers)
    assert (headers["traceparent"], headers["tracestate"]) == (TRACEPARENT.encode(), b"vendor=opaque")
    back = from_record(stored(env)).envelope
    assert back == env and event_trace_id(back) == "4bf92f3577b34da6a3ce929d0e0e4736"
    context = event_span_context(back)
    assert context is not None and context.is_remote and context.trace_flags.sampled


def test_the_tenant_travels_as_a_header_and_an_event_without_one_has_none() -> None:
    env = msgspec.structs.replace(SAMPLE, tenant="acme")
    assert dict(to_record(env).headers)["tenant"] == b"acme"
    assert from_record(stored(env)).envelope.tenant == "acme"
    assert "tenant" not in dict(to_record(SAMPLE).headers) and from_record(stored(SAMPLE)).envelope.tenant is None


def test_a_record_written_without_trace_context_still_decodes() -> None:
    record = to_record(SAMPLE)
    assert not {"traceparent", "tracestate"} & {name for name, _ in record.headers}
    back = from_record(stored(SAMPLE)).envelope
    assert back == SAMPLE and back.traceparent is None and event_trace_id(back) is None


@pytest.mark.parametrize("traceparent", [
    "not a traceparent",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # an all-zero trace id is invalid
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # so is an all-zero span id
])
def test_a_malformed_traceparent_means_no_trace_not_a_dead_letter(traceparent: str) -> None:
    env = from_record(stored(msgspec.structs.replace(SAMPLE, traceparent=traceparent))).envelope
    assert env.traceparent == traceparent and event_span_context(env) is None and event_trace_id(env) is None


def landed(records: list[Record], base: int) -> list[StoredRecord]:
    return [StoredRecord("events", 0, base + i, r.key, r.value, r.headers, 0) for i, r in enumerate(records)]


@given(st.lists(envelopes, min_size=1, max_size=5), st.integers(0, 10_000), st.integers(-3, 3))
def test_a_batch_is_folded_only_where_its_writer_expected_it(batch: list[Envelope], expected: int, shift: int) -> None:
    records = fenced([to_record(e) for e in batch], expected)
    base = max(0, expected + shift)
    for rec in landed(records, base):
        if base == expected:
            assert passed_over(rec) is None
            assert from_record(rec).offset == rec.offset
        else:
            meant = rec.offset - base + expected
            assert passed_over(rec) == f"fenced: written for offset {meant}, landed at {rec.offset}"
            with pytest.raises(PassedOver):
                from_record(rec)


def test_an_ownership_marker_is_no_event_and_says_who_and_at_which_epoch() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    [rec] = landed(fenced([ownership_marker("decider-a", 7, at)], 12), 12)
    assert passed_over(rec) == "ownership marker"
    assert marker_of(rec) == OwnershipMarker("decider-a", 7, at)
    with pytest.raises(PassedOver):
        from_record(rec)
    [moved] = landed(fenced([ownership_marker("decider-a", 7, at)], 12), 13)
    assert passed_over(moved) == "ownership marker"  # a marker is never an event, wherever it landed


def test_records_without_the_header_are_folded_as_before() -> None:
    rec = stored(SAMPLE)
    assert passed_over(rec) is None


def _record_as_before(env: Envelope) -> Record:
    """``to_record`` as it was written before it spelt its headers out one by one: the stored format."""
    headers = [(name, getattr(env, name).encode()) for name in
               ("event_id", "stream", "type", "command_id", "correlation_id", "causation_id", "actor", "command_hash")]
    headers += [(name, str(getattr(env, name)).encode()) for name in ("stream_version", "schema_version",
                                                                        "writer_epoch")]
    headers.append(("occurred_at", env.occurred_at.isoformat().encode()))
    headers.append(("content-type", b"application/json"))
    headers += [(name, value.encode()) for name in ("traceparent", "tracestate", "agent_run_id", "agent_model",
                                                    "prompt_hash", "tenant")
                if (value := getattr(env, name)) is not None]
    return Record(key=env.partition_key.encode(), value=env.payload, headers=tuple(headers),
                  timestamp_ms=int(env.occurred_at.timestamp() * 1000))


@given(envelopes.map(lambda e: msgspec.structs.replace(e, agent_model="m-1")) | envelopes, st.integers(0, 2**40))
def test_a_record_is_stored_as_before_and_fenced_as_fenced_fences_it(env: Envelope, at: int) -> None:
    assert to_record(env) == _record_as_before(env)
    assert to_record(env, expected_offset=at) == fenced([_record_as_before(env)], at)[0]
