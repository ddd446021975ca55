"""Partition snapshots without a log: capture, encode/decode, schema check, chunking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.command_api.owner import PartitionOwner
from blackboard.command_api.results import StoredOutcome
from blackboard.command_api.snapshots import (
    Snapshot,
    SnapshotUnusable,
    apply_snapshot,
    batches,
    chunk_header,
    chunk_records,
    decode_snapshot,
    encode_snapshot,
    schema_fingerprint,
    state_types,
    take_snapshot,
)
from blackboard.events.codec import to_record
from blackboard.events.log import PartitionedLog, Record, StoredRecord, check_record_sizes
from blackboard.schemas.api import Rejected
from blackboard.schemas.clock import Ticked
from blackboard.schemas.document import DocumentCreated
from blackboard.schemas.envelope import Envelope, stream_partition_key
from blackboard.schemas.lease import LeaseGranted
from blackboard.schemas.project import CostAdded, ProjectCreated
from blackboard.schemas.registry import encode_payload, event_name, schema_version_of
from blackboard.schemas.task import TaskCreated

AT = datetime(2026, 1, 1, tzinfo=UTC)


def owner() -> PartitionOwner:
    """An owner that is only folded into: it never touches its log."""
    return PartitionOwner(cast(PartitionedLog, _NoLog()), events_topic="events", results_topic="results", partition=0)


class _NoLog:
    """Stands where a log is required and never called: these tests fold records by hand."""

    engine = "none"


def stored(offset: int, rec: Record, topic: str = "events") -> StoredRecord:
    return StoredRecord(topic, 0, offset, rec.key, rec.value, rec.headers, rec.timestamp_ms or 0)


def envelope(stream: str, version: int, event: msgspec.Struct, n: int) -> Envelope:
    name = event_name(event)
    cid = f"c-{stream}-{version}"
    return Envelope(event_id=str(uuid.uuid4()), stream=stream, stream_version=version, type=name,
                    schema_version=schema_version_of(name), occurred_at=AT + timedelta(seconds=n), command_id=cid,
                    correlation_id=cid, causation_id=cid, actor="alice", writer_epoch=1,
                    partition_key=stream_partition_key(stream), payload=encode_payload(event), command_hash="h" + cid)


def streams_of_every_kind(costs: list[Decimal], title: str, body: dict[str, Any]) -> list[tuple[str, msgspec.Struct]]:
    events: list[tuple[str, msgspec.Struct]] = [
        ("project:p-1", ProjectCreated(title, "EUR", Decimal("1000000"), {"style": "noir"})),
        *[("project:p-1", CostAdded(c, "render")) for c in costs],
        ("task:t-1", TaskCreated("render", 3, {"frames": 24}, ["gpu"])),
        ("lease:l-1", LeaseGranted("node-1", 1, AT + timedelta(seconds=30))),
        ("doc:reviews.r-1", DocumentCreated("reviews", "r-1", body, {}, "alice")),
        ("clock:main", Ticked(AT + timedelta(minutes=5))),
    ]
    return events


def folded(events: list[tuple[str, msgspec.Struct]], rejected: int = 1) -> PartitionOwner:
    o = owner()
    versions: dict[str, int] = {}
    for n, (stream, event) in enumerate(events):
        versions[stream] = versions.get(stream, 0) + 1
        o.fold_event(stored(n, to_record(envelope(stream, versions[stream], event, n))))
    for i in range(rejected):
        out = StoredOutcome(f"r-{i}", "project:p-1", "fp", Rejected(f"r-{i}", "budget_exceeded", "no", {"left": "1"}))
        o.fold_result(stored(i, Record(None, msgspec.json.encode(out)), "results"))
    return o


def assert_same(a: PartitionOwner, b: PartitionOwner) -> None:
    assert a.streams == b.streams
    assert a.known == b.known
    assert a.unreadable == b.unreadable
    assert (a.next_offset, a.results_offset, a.commands_offset, a.epoch) == (
        b.next_offset, b.results_offset, b.commands_offset, b.epoch)


money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1000"), places=2)
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=3), max_leaves=8)


@settings(max_examples=40, deadline=None)
@given(costs=st.lists(money, max_size=8), title=st.text(min_size=1, max_size=30),
       body=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_a_snapshot_round_trips_every_category(costs: list[Decimal], title: str, body: dict[str, Any]) -> None:
    original = folded(streams_of_every_kind(costs, title, body))
    snapshot = take_snapshot(original)
    restored = owner()
    apply_snapshot(restored, decode_snapshot(encode_snapshot(snapshot)))
    assert_same(restored, original)
    assert {s.partition(":")[0] for s in restored.streams} == {"project", "task", "lease", "doc", "clock"}


def test_every_decider_has_a_state_type_that_is_not_none_type() -> None:
    for category, t in state_types().items():
        assert t is not type(None), category


def test_a_snapshot_of_another_schema_is_refused() -> None:
    snapshot = msgspec.structs.replace(take_snapshot(folded(streams_of_every_kind([], "t", {}))), schema="0" * 64)
    with pytest.raises(SnapshotUnusable, match="schema"):
        decode_snapshot(encode_snapshot(snapshot))


def test_bytes_that_are_not_a_snapshot_are_refused() -> None:
    with pytest.raises(SnapshotUnusable, match="does not decode"):
        decode_snapshot(b"not zlib")


def test_the_known_window_keeps_the_most_recent_ids() -> None:
    original = folded(streams_of_every_kind([Decimal(1)] * 10, "t", {}), rejected=3)
    snapshot = take_snapshot(original, known_window=4)
    assert [k.command_id for k in snapshot.known] == list(original.known)[-4:]


@pytest.mark.parametrize("limit", [600, 4096, 1_048_576])
def test_chunks_respect_the_record_limit_and_join_back(limit: int) -> None:
    snapshot = take_snapshot(folded(streams_of_every_kind([Decimal(i) for i in range(1, 300)], "t", {})))
    data = encode_snapshot(snapshot)
    records = chunk_records(snapshot, data, max_record_bytes=limit)
    check_record_sizes(records, limit)
    headers = [chunk_header(stored(i, r, "snapshots")) for i, r in enumerate(records)]
    assert [h.index for h in headers] == list(range(len(records)))
    assert {(h.count, h.snapshot_id, h.schema) for h in headers} == {(len(records), headers[0].snapshot_id,
                                                                       schema_fingerprint())}
    assert [r.key for r in records] == [f"0:{i}".encode() for i in range(len(records))]
    assert b"".join(r.value or b"" for r in records) == data
    assert isinstance(decode_snapshot(data), Snapshot)


def test_batches_keep_order_and_stay_under_the_batch_limit() -> None:
    records = [Record(b"k", b"x" * 1000) for _ in range(50)]
    grouped = batches(records, 10_000)
    assert [r for b in grouped for r in b] == records
    assert all(sum(len(r.value or b"") + 70 for r in b) <= 10_000 for b in grouped)
    assert len(grouped) > 1
    assert batches(records[:3], 10_000) == [records[:3]]


def test_a_limit_too_small_for_the_headers_is_an_error() -> None:
    snapshot = take_snapshot(owner())
    with pytest.raises(ValueError, match="no room"):
        chunk_records(snapshot, b"x", max_record_bytes=100)
