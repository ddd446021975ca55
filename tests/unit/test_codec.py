"""Envelope ↔ record: every field survives; every malformed record says why it is not an event."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.events.codec import UndecodableRecord, from_record, to_record
from blackboard.events.log import StoredRecord
from blackboard.schemas.envelope import Envelope

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
envelopes = st.builds(
    Envelope, event_id=text, stream=text, stream_version=st.integers(1, 2**40), type=text,
    schema_version=st.integers(1, 9),
    occurred_at=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    command_id=text, correlation_id=text, causation_id=text, actor=text, writer_epoch=st.integers(0, 2**31),
    partition_key=text, payload=st.binary(max_size=200), command_hash=st.text(max_size=64),
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
