"""One group commit, read top to bottom: decide, fence, append, then remember, publish and answer.

``commit_group`` is what a partition owner (``command_api.owner``) does with the commands it took
from its queue together. Each command is decided in order on the owner's memory, without I/O (a
later command sees the events of an earlier one of the same group), into a ``Decision``: the
streams' new states, the commands decided, the envelopes to append, and each command's answer.
The envelopes become records fenced to land where the owner's state ends, and are appended as ONE
batch (all or none): the log refuses it (``OffsetConflict``) when another writer appended meanwhile,
so a writer that lost its partition without knowing it never gets a batch acknowledged. Once the
log has acknowledged it, the decision becomes the owner's memory, what left no event goes to the
command-results topic, and the callers are answered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from opentelemetry import trace
from opentelemetry.context import Context as OtelContext
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind

from blackboard.command_api import metrics
from blackboard.command_api.errors import IdempotencyKeyReused, Refusal, StreamUnreadable
from blackboard.command_api.memory import Held, Known, PartitionMemory
from blackboard.command_api.metrics import FENCED_WRITES
from blackboard.command_api.results import StoredOutcome, refusal_body
from blackboard.domain.decider import Context, Rejection
from blackboard.domain.registry import DECIDERS
from blackboard.events.codec import to_record
from blackboard.events.log import (
    BATCH_OVERHEAD,
    OffsetConflict,
    PartitionedLog,
    Record,
    batched_bytes,
    fitting,
    split_to_fit,
)
from blackboard.events.tracing import current_trace_headers, distinct, spans_recorded
from blackboard.schemas.api import Accepted, AgentMetadata, CheckView, DryRun, EventView, Outcome, Rejected
from blackboard.schemas.changes import diff
from blackboard.schemas.envelope import Envelope, encode_token, stream_partition_key
from blackboard.schemas.registry import VOLATILE_COMMANDS, encode_payload, event_name, schema_version_of
from blackboard.schemas.tenancy import tenant_of_stream

if TYPE_CHECKING:
    # The owner hands its group on to this module: its types only, for the annotations.
    from blackboard.command_api.owner import PartitionOwner, Submission

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

Answer = Outcome | DryRun | Refusal


@dataclass(slots=True)
class Decision:
    """What a group decided, before its append."""

    #: The streams the group changed, as they are after it.
    scratch: dict[str, Held] = field(default_factory=dict)
    #: The commands decided (remembered once committed).
    decided: dict[str, Known] = field(default_factory=dict)
    envelopes: list[Envelope] = field(default_factory=list)
    answers: list[tuple[Submission, Answer, bool]] = field(default_factory=list)
    #: The decide span of every command that appends events: the context its events carry.
    writers: list[SpanContext] = field(default_factory=list)
    #: How many of ``envelopes`` each command of the group left, in order (a batch is cut between commands).
    counts: list[int] = field(default_factory=list)


async def commit_group(owner: PartitionOwner, group: list[Submission]) -> None:
    """One group commit of ``owner``: decide, append the events as one batch, then remember, publish and answer.

    Note: the state is advanced only after the log acknowledged the batch (``commit``); an append that fails
    raises, and the owner restores before it decides again.
    """
    started = time.perf_counter()
    spans = spans_recorded()
    decision = decide_group(owner, group, spans=spans)
    records = event_records(decision.envelopes, owner.next_offset)
    cut = cut_to_fit(owner.log, records, decision.counts)
    if cut:  # one batch could not hold the group's events: decide it again as two groups
        for part in (group[:cut], group[cut:]):
            await commit_group(owner, part)
        return
    appending = time.perf_counter()
    metrics.DECIDE_SECONDS.observe(appending - started)
    metrics.GROUP_SIZE.observe(len(group))
    if spans:
        with append_span(owner.log, owner.events_topic, owner.partition, traces=[s.trace for s in group],
                         writers=decision.writers, events=len(decision.envelopes)):
            base = await append_events(owner.log, owner.events_topic, owner.partition, records, owner.next_offset)
    else:
        base = await append_events(owner.log, owner.events_topic, owner.partition, records, owner.next_offset)
    metrics.APPEND_SECONDS.observe(time.perf_counter() - appending)
    commit(owner, decision, base)
    if owner.appended is not None and decision.envelopes:
        owner.appended(owner.events_topic, owner.partition, base, decision.envelopes)
    results = stored_results(owner, decision, publish_all=owner.publish_all)
    end = await append_results(owner.log, owner.results_topic, owner.partition, results)
    if end is not None:
        owner.results_offset = end
    taken = [sub.source_offset for sub in group if sub.source_offset is not None]
    if taken:
        owner.commands_offset = max(owner.commands_offset, max(taken) + 1)
    answer(owner, decision)


# ── decide: each command on the memory, without I/O ───────────────────────────────────


def decide_group(memory: PartitionMemory, group: Sequence[Submission], *, spans: bool = True) -> Decision:
    """Decide every command of ``group`` in order, each in a span of its own.

    Note: with ``spans`` false (no tracer provider: ``spans_recorded``), without the spans, whose only effect
    then is the trace context the events carry: the request's own, taken from it directly.
    """
    decision = Decision()
    if not spans:
        for sub in group:
            appended = len(decision.envelopes)
            decision.answers.append((sub, *_decide_one(memory, sub, decision, sub.trace)))
            decision.counts.append(len(decision.envelopes) - appended)
        return decision
    for sub in group:
        appended = len(decision.envelopes)
        with tracer.start_as_current_span(f"decide {sub.command_type}", context=sub.trace,
                                          attributes=_command_attributes(sub)) as span:
            answer, replayed = _decide_one(memory, sub, decision)
            decision.answers.append((sub, answer, replayed))
            _set_outcome(span, answer, replayed)
        if len(decision.envelopes) > appended:
            decision.writers.append(span.get_span_context())
        decision.counts.append(len(decision.envelopes) - appended)
    return decision


def _decide_one(memory: PartitionMemory, sub: Submission, decision: Decision,
                trace_context: OtelContext | None = None) -> tuple[Answer, bool]:
    prior = decision.decided.get(sub.command_id) or memory.known.get(sub.command_id)
    if prior is not None and not sub.dry_run:
        if prior.fingerprint != sub.fingerprint:
            return IdempotencyKeyReused(sub.command_id), False
        return prior.outcome, True
    if sub.stream in memory.unreadable:
        return StreamUnreadable(
            f"{sub.stream} holds an event this build cannot read ({memory.unreadable[sub.stream]}); "
            "no command is decided on it until a build that reads it runs"), False
    current = decision.scratch.get(sub.stream) or memory.streams.get(sub.stream)
    version = current.version if current else 0
    state = current.state if current else DECIDERS[sub.category].initial_state
    ctx = Context(now=memory.clock(), actor=sub.actor, stream=sub.stream)
    result = _decide_on(state, version, sub, ctx)
    if sub.dry_run:
        return _dry_run(sub, state, version, result, ctx), False
    if isinstance(result, Rejection):
        outcome: Outcome = Rejected(sub.command_id, result.code, result.message, result.details)
    else:
        outcome = _accept(memory, sub, Held(state, version), result, decision, ctx.now, trace_context)
    if sub.command_type in VOLATILE_COMMANDS and isinstance(outcome, Accepted) and not outcome.events:
        # A no-op answered, not remembered: deciding it again is harmless (see VOLATILE_COMMANDS).
        if isinstance(outcome, Accepted):
            outcome = msgspec.structs.replace(
                outcome, position=encode_token({memory.partition: max(memory.next_offset - 1, 0)}))
        return outcome, False
    decision.decided[sub.command_id] = Known(sub.fingerprint, outcome)
    return outcome, False


def _decide_on(state: Any, version: int, sub: Submission, ctx: Context) -> list[Any] | Rejection:
    """The decider's answer, after the one rule every command shares: ``expected_version``."""
    if not ctx.require("expected_version is the stream's version",
                       sub.expected_version is None or sub.expected_version == version):
        return Rejection(
            "version_conflict",
            f"{sub.stream} is at version {version}, the command expected {sub.expected_version}",
            {"stream": sub.stream, "expected_version": sub.expected_version, "actual_version": version},
        )
    result: list[Any] | Rejection = DECIDERS[sub.category].decide(state, sub.payload, ctx)
    return result


def _accept(memory: PartitionMemory, sub: Submission, before: Held, events: list[Any], decision: Decision,
            now: datetime, trace_context: OtelContext | None = None) -> Accepted:
    evolve = DECIDERS[sub.category].evolve
    state, version = before.state, before.version
    views: list[EventView] = []
    agent = sub.agent or AgentMetadata()
    # Called inside the command's decide span: its events carry that span's context through the log (or, without
    # spans, ``trace_context``'s: the request's).
    traceparent, tracestate = current_trace_headers(trace_context)
    for event in events:
        version += 1
        state = evolve(state, event)
        name = event_name(event)
        env = Envelope(
            event_id=_uuid4(), stream=sub.stream, stream_version=version, type=name,
            schema_version=schema_version_of(name), occurred_at=now, command_id=sub.command_id,
            correlation_id=sub.correlation_id, causation_id=sub.causation_id, actor=sub.actor, tenant=sub.tenant,
            writer_epoch=memory.epoch, partition_key=stream_partition_key(sub.stream),
            payload=encode_payload(event), command_hash=sub.fingerprint,
            traceparent=traceparent, tracestate=tracestate,
            agent_run_id=agent.run_id, agent_model=agent.model, prompt_hash=agent.prompt_hash,
        )
        decision.envelopes.append(env)
        views.append(EventView(env.event_id, name, sub.stream, version, msgspec.to_builtins(event)))
    decision.scratch[sub.stream] = Held(state, version)
    # The position is filled in once the log has said where the batch went.
    return Accepted(sub.command_id, sub.stream, version, views, position="")


def _uuid4() -> str:
    """``str(uuid.uuid4())``: 122 random bits, version 4, variant RFC 4122, in a quarter of its time."""
    x = os.urandom(16).hex()
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{'89ab'[int(x[16], 16) & 3]}{x[17:20]}-{x[20:]}"


def _dry_run(sub: Submission, state: Any, version: int, result: list[Any] | Rejection, ctx: Context) -> DryRun:
    """What ``sub`` would do to ``state``: its events, the fields they change, the rules checked.

    Note: the events are folded into a copy of the state only (states are immutable values);
    nothing reaches the log or the owner's memory.
    """
    checks = [CheckView(c.rule, c.passed) for c in ctx.checks]
    if isinstance(result, Rejection):
        return DryRun(sub.command_id, sub.stream, "rejected", version, [], [], checks, result.code, result.message,
                      result.details)
    evolve = DECIDERS[sub.category].evolve
    after = state
    views = []
    for i, event in enumerate(result, start=1):
        after = evolve(after, event)
        views.append(EventView("", event_name(event), sub.stream, version + i, msgspec.to_builtins(event)))
    changes = diff(msgspec.to_builtins(state), msgspec.to_builtins(after))
    return DryRun(sub.command_id, sub.stream, "accepted", version + len(result), views, changes, checks)


def _command_attributes(sub: Submission) -> dict[str, str]:
    return {"blackboard.command.id": sub.command_id, "blackboard.command.type": sub.command_type,
            "blackboard.stream": sub.stream}


def _set_outcome(span: Span, answer: Answer, replayed: bool) -> None:
    if isinstance(answer, DryRun):
        outcome = "dry_run"
    elif isinstance(answer, IdempotencyKeyReused | StreamUnreadable):
        outcome = answer.code
    else:
        outcome = "replayed" if replayed else "accepted" if isinstance(answer, Accepted) else "rejected"
    span.set_attribute("blackboard.command.outcome", outcome)
    if isinstance(answer, Rejected):
        span.set_attribute("blackboard.rejection.code", answer.code)


# ── fence and append: the events as one batch where the state ends ────────────────────


def event_records(envelopes: list[Envelope], at: int) -> list[Record]:
    """A group's events as the records of one batch, fenced to land at offset ``at``."""
    return [to_record(e, expected_offset=at + i) for i, e in enumerate(envelopes)]


def cut_to_fit(log_: PartitionedLog, records: list[Record], counts: list[int]) -> int:
    """Where to cut a group whose events (``counts`` of ``records`` per command) exceed the log's batch
    budget (a broker would refuse the batch), keeping each command's events together; 0 when they fit.

    Note: each part is then all-or-none, and so still each command.
    """
    budget: int | None = getattr(log_, "max_batch_bytes", None)
    if budget is None or len(counts) < 2 or BATCH_OVERHEAD + batched_bytes(records) <= budget:
        return 0
    sizes, at = [], 0
    for n in counts:
        sizes.append(batched_bytes(records[at:at + n]))
        at += n
    return fitting(sizes, budget)


def append_span(log_: PartitionedLog, topic: str, partition: int, *, traces: Sequence[OtelContext | None],
                writers: Sequence[SpanContext], events: int) -> AbstractContextManager[Span]:
    """The span of one group commit: a child of the first writer's decide span, linked to the others'.

    Note: one append carries the events of several commands, each of its own trace; the span
    lives in one of them and links to the rest, as a batch publish does in messaging.
    """
    contexts = distinct(writers)
    parent = trace.set_span_in_context(NonRecordingSpan(contexts[0])) if contexts else traces[0]
    return tracer.start_as_current_span(
        f"append {topic}", context=parent, kind=SpanKind.PRODUCER,
        links=[Link(c) for c in contexts[1:]],
        attributes={"messaging.system": log_.engine, "messaging.destination.name": topic,
                    "messaging.destination.partition.id": str(partition),
                    "messaging.batch.message_count": events, "blackboard.commands": len(traces)},
    )


async def append_events(log_: PartitionedLog, topic: str, partition: int, records: list[Record], at: int) -> int:
    """Append ``records`` (``event_records``) as one batch where the writer's state ends (``at``); the offset
    of the first.

    Note: refusals and no-ops append no event, so no append can fence them: with no record, check
    instead that no other writer has moved the partition since the state was built.
    """
    if not records:
        end = await log_.end_offset(topic, partition)
        if end != at:
            raise OffsetConflict(topic, partition, at, end, appended=False)
        return at
    try:
        return await log_.append(topic, partition, records, expected_offset=at)
    except OffsetConflict:
        # Another writer appended: we are not (or no longer) the only owner. Never acknowledge.
        log.error("owner.fenced", partition=partition, expected=at)
        FENCED_WRITES.labels(str(partition)).inc()
        raise


# ── after the append: remember, publish, answer ───────────────────────────────────────


def commit(memory: PartitionMemory, decision: Decision, base: int) -> None:
    """Make the decision the memory's, the batch having gone to offsets ``base`` and on."""
    memory.streams.update(decision.scratch)
    last_offset_of: dict[str, int] = {}
    for i, env in enumerate(decision.envelopes):
        last_offset_of[env.command_id] = base + i
    for cid, k in decision.decided.items():
        outcome = k.outcome
        if isinstance(outcome, Accepted):
            offset = last_offset_of.get(cid, max(memory.next_offset - 1, 0) if not outcome.events else base)
            outcome = msgspec.structs.replace(outcome, position=encode_token({memory.partition: offset}))
        memory.known[cid] = Known(k.fingerprint, outcome)
    memory.next_offset = base + len(decision.envelopes)


def stored_results(memory: PartitionMemory, decision: Decision, *, publish_all: bool) -> list[StoredOutcome]:
    """What the group leaves on the command-results topic, once its events are in the log.

    Note: every outcome that left no event (it is remembered only there), and every answer to
    a command that came through the commands topic (its sender waits there, and the offset
    tells a restore where to resume); with ``publish_all``, every outcome decided here.
    """
    results = []
    for sub, answer, replayed in decision.answers:
        remembered = sub.command_id in decision.decided and not replayed and not sub.dry_run
        final = memory.known[sub.command_id].outcome if remembered else answer
        left_events = isinstance(final, Accepted) and bool(final.events)
        wanted = (sub.source_offset is not None or (remembered and not left_events)
                  or (publish_all and not sub.dry_run))
        if not wanted:
            continue
        if isinstance(final, IdempotencyKeyReused | StreamUnreadable):
            error, outcome = refusal_body(final), None
        else:
            error, outcome = None, final
        results.append(StoredOutcome(sub.command_id, sub.stream, sub.fingerprint, outcome, remember=remembered,
                                     replayed=replayed, error=error, commands_offset=sub.source_offset))
    return results


async def append_results(log_: PartitionedLog, topic: str, partition: int, results: list[StoredOutcome]) -> int | None:
    """Append ``results`` to the command-results topic; one past the last offset, ``None`` when there were none."""
    if not results:
        return None
    records = [
        Record(key=stream_partition_key(r.stream).encode(), value=msgspec.json.encode(r),
               headers=(("type", b"command.outcome"), ("command_id", r.command_id.encode())))
        for r in results
    ]
    # Outcomes are independent of each other: a group's may take several batches, each within the budget.
    end = 0
    for part in split_to_fit(records, getattr(log_, "max_batch_bytes", None)):
        end = await log_.append(topic, partition, part) + len(part)
    return end


def answer(memory: PartitionMemory, decision: Decision) -> None:
    """Give every waiting caller its answer (a refusal is raised to it)."""
    for sub, found, replayed in decision.answers:
        if sub.future.done():
            # Its caller went away (a cancelled request): the decision stands, nobody waits for the answer.
            continue
        if isinstance(found, IdempotencyKeyReused | StreamUnreadable):
            _counted(sub, found.code)
            sub.future.set_exception(found)
        elif isinstance(found, DryRun):
            _counted(sub, "dry_run")
            sub.future.set_result((found, False))
        else:
            final = memory.known[sub.command_id].outcome if sub.command_id in memory.known else found
            _counted(sub, "replayed" if replayed else "accepted" if isinstance(final, Accepted) else "rejected")
            sub.future.set_result((final, replayed))


#: The series of ``metrics.COMMANDS`` by their labels: ``labels()`` checks and looks its arguments up on every call.
_SERIES: dict[tuple[str, str, str], Any] = {}


def _counted(sub: Submission, outcome: str) -> None:
    key = (sub.command_type, outcome, tenant_of_stream(sub.stream))
    series = _SERIES.get(key)
    if series is None:
        series = _SERIES[key] = metrics.COMMANDS.labels(*key)
    series.inc()
