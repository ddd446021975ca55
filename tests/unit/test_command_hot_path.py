"""The command path's shortcuts decide, validate and wait exactly as the longer ways they replace."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, NoOpTracerProvider, ProxyTracerProvider, SpanContext, TraceFlags

from blackboard.command_api import group_commit
from blackboard.command_api.errors import Unavailable
from blackboard.command_api.group_commit import _uuid4, decide_group
from blackboard.command_api.memory import PartitionMemory
from blackboard.command_api.owner import Submission, submission
from blackboard.command_api.service import CommandService
from blackboard.domain.decoding import (
    MAX_DEPTH,
    InvalidCommand,
    _clean,
    _HugeInt,
    _is_identifier,
    validate_command,
    walk,
)
from blackboard.events.partitioner import partition_for
from blackboard.events.postgres.log import PostgresLog
from blackboard.events.tracing import spans_recorded
from blackboard.schemas.api import Accepted, CommandRequest, Rejected
from blackboard.schemas.envelope import stream_partition_key
from blackboard.schemas.project import AddCost, CreateProject
from blackboard.schemas.types import Identifier

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _traced(request: CommandRequest, payload: msgspec.Struct, span_id: int) -> Submission:
    context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=span_id, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED))))
    return submission(request, payload, actor="alice", trace=context)


def _group() -> list[Submission]:
    return [
        _traced(CommandRequest("project.create", "project:p-1", {}, command_id="c-1"),
                CreateProject(title="t", currency="EUR", budget_total="10"), 0xB7AD6B7169203331),
        _traced(CommandRequest("project.add_cost", "project:p-1", {}, command_id="c-2"),
                AddCost(amount="4", reason="r"), 0x00F067AA0BA902B7),
        submission(CommandRequest("project.add_cost", "project:p-1", {}, command_id="c-3"),
                   AddCost(amount="7", reason="r"), actor="bob"),
        submission(CommandRequest("project.add_cost", "project:p-1", {}, command_id="c-2"),
                   AddCost(amount="4", reason="r"), actor="alice"),
    ]


async def test_without_a_tracer_provider_a_group_is_decided_as_with_its_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    # As without a provider whatever a test before installed: the API's proxy tracers then use a no-op tracer.
    monkeypatch.setattr(group_commit, "tracer", trace.NoOpTracer())
    with_spans = decide_group(PartitionMemory(0, lambda: NOW), _group(), spans=True)
    without = decide_group(PartitionMemory(0, lambda: NOW), _group(), spans=False)

    assert [(type(a), r) for _, a, r in without.answers] == [(type(a), r) for _, a, r in with_spans.answers]
    assert [type(a) for _, a, _ in without.answers] == [Accepted, Accepted, Rejected, Accepted]
    assert without.counts == with_spans.counts == [1, 1, 0, 0]
    assert without.scratch == with_spans.scratch
    strip = {"event_id"}
    assert ([{k: v for k, v in msgspec.structs.asdict(e).items() if k not in strip} for e in without.envelopes]
            == [{k: v for k, v in msgspec.structs.asdict(e).items() if k not in strip} for e in with_spans.envelopes])
    # Each event carries its request's trace context, whether or not the decide span was started.
    assert [e.traceparent for e in without.envelopes] == [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"]
    assert without.writers == []


def test_spans_are_recorded_when_the_api_has_a_tracer_provider_other_than_its_own() -> None:
    # Whichever of the two this process is in (a test before may have installed the SDK's provider).
    assert spans_recorded() is not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider)


def test_an_event_id_is_a_random_uuid4_as_uuid_writes_it() -> None:
    ids = {_uuid4() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)
    # Every bit the format leaves free is used: each hex digit but the version's takes every value somewhere.
    assert all(len({t[i] for t in ids}) == (1 if i == 14 else 4 if i == 19 else 16)
               for i in range(36) if i not in (8, 13, 18, 23))


@given(st.text(max_size=140) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,130}\n?", fullmatch=True))
def test_an_identifier_is_what_msgspec_takes_as_one(text: str) -> None:
    try:
        msgspec.convert(text, Identifier)
        taken = True
    except msgspec.ValidationError:
        taken = False
    assert _is_identifier(text) is taken


_scalars = (st.none() | st.booleans() | st.integers(-2**60, 2**60) | st.floats(allow_nan=True)
            | st.builds(_HugeInt, st.integers(17, 40)) | st.text(max_size=8)
            | st.sampled_from(["a\x00b", "\ud800", "k" * 300]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=4) | st.sampled_from(["\x00", "k" * 300]), inner, max_size=4),
                       max_leaves=20)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@given(_values | st.sampled_from([_nested(MAX_DEPTH - 1), _nested(MAX_DEPTH), _nested(MAX_DEPTH + 1),
                                  {"a": _nested(MAX_DEPTH)}]))
def test_a_value_is_clean_exactly_when_the_walk_finds_nothing_in_it(value: object) -> None:
    assert _clean(value, 0) is (next(walk(value, "$", 0), None) is None)


def test_a_body_with_a_byte_order_mark_is_still_not_json() -> None:
    body = "\ufeff" + '{"type": "project.add_cost", "stream": "project:p", "payload": {}}'
    with pytest.raises(InvalidCommand) as caught:
        validate_command(body.encode())
    assert caught.value.code == "malformed_json" and "BOM" in caught.value.errors[0].message


class _Silent:
    """An owner that queues what it is given and never answers: the caller's wait ends by its timeout."""

    def __init__(self) -> None:
        self.queued: list[Submission] = []

    def lookup(self, command_id: str, fingerprint: str) -> None:
        return None

    def submit(self, sub: Submission) -> None:
        self.queued.append(sub)


def _service(timeout: float) -> CommandService:
    return CommandService(PostgresLog("postgresql://unused/none"), events_topic="e", results_topic="r", partitions=8,
                          command_timeout=timeout)


def _sub(command_id: str) -> Submission:
    return submission(CommandRequest("project.add_cost", "project:p-1", {}, command_id=command_id),
                      AddCost(amount="1", reason="r"), actor="alice")


async def test_a_caller_that_times_out_leaves_its_command_queued_and_pending() -> None:
    service, owner, sub = _service(0.02), _Silent(), _sub("c-1")
    with pytest.raises(Unavailable) as caught:
        await service._local(owner, 0, sub)  # type: ignore[arg-type]
    assert caught.value.code == "outcome_pending"
    assert owner.queued == [sub] and not sub.future.done()
    assert service.outcome_of("c-1") == "pending"
    outcome = Accepted("c-1", "project:p-1", 1, [], position="0:0")
    sub.future.set_result((outcome, False))
    await asyncio.sleep(0)
    assert service.outcome_of("c-1") != "pending"


async def test_a_caller_cancelled_does_not_cancel_its_command_and_an_answer_wakes_the_next() -> None:
    service, owner = _service(5.0), _Silent()
    first, second = _sub("c-1"), _sub("c-2")
    waiting = asyncio.create_task(service._local(owner, 0, first))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not first.future.cancelled() and service.outcome_of("c-1") == "pending"
    answered = asyncio.create_task(service._local(owner, 0, second))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    outcome = Accepted("c-2", "project:p-1", 1, [], position="0:0")
    second.future.set_result((outcome, False))
    assert await answered == (outcome, False)
    failed = _sub("c-3")
    raising = asyncio.create_task(service._local(owner, 0, failed))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    failed.future.set_exception(Unavailable("down", code="log_unavailable"))
    with pytest.raises(Unavailable):
        await raising


def test_the_partition_of_a_stream_is_murmur2_of_its_key_also_when_remembered() -> None:
    service = _service(1.0)
    streams = [f"project:p-{i}" for i in range(50)] + ["task:t-1", "tenant.acme/project:p-1"]
    for _ in range(2):
        assert [service.partition_of(s) for s in streams] == [
            partition_for(stream_partition_key(s), 8) for s in streams]

