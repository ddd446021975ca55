"""Envelope ↔ record: every field survives; every malformed record says why it is not an event."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.events.codec import UndecodableRecord, from_record, to_record
from blackboard.events.log import StoredRecord
from blackboard.events.tracing import event_span_context, event_trace_id
from blackboard.schemas.envelope import Envelope

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
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
)


def stored(env: Envelope, **changes: object) -> StoredRecord:
    r = to_record(env)
    fields = {"key": r.key, "value": r.value, "headers": r.headers, **changes}
    return StoredRecord("events", 3, 42, fields["key"], fields["value"], fields["headers"], 0)  # type: ignore[arg-type]


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
