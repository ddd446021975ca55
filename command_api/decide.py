"""One group commit's decisions: each command of the group decided on the owner's memory, without I/O.

``decide_group`` decides every command in order (a later command sees the events of an earlier one
of the same group) into a ``Decision``: the streams' new states, the commands decided, the envelopes
to append as one batch, and each command's answer. Once the log has acknowledged the batch,
``commit`` makes it the owner's memory, ``stored_results`` says what goes on the command-results
topic, and ``answer`` wakes the callers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from opentelemetry import trace
from opentelemetry.trace import Span, SpanContext

from blackboard.command_api import metrics
from blackboard.command_api.errors import IdempotencyKeyReused, Refusal, StreamUnreadable
from blackboard.command_api.memory import Held, Known, PartitionMemory
from blackboard.command_api.results import StoredOutcome, refusal_body
from blackboard.command_api.submit import Submission
from blackboard.domain.decider import Context, Rejection
from blackboard.domain.registry import DECIDERS
from blackboard.events.tracing import current_trace_headers
from blackboard.schemas.api import Accepted, AgentMetadata, CheckView, DryRun, EventView, Outcome, Rejected
from blackboard.schemas.changes import diff
from blackboard.schemas.envelope import Envelope, encode_token, stream_partition_key
from blackboard.schemas.registry import VOLATILE_COMMANDS, encode_payload, event_name, schema_version_of

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


def decide_group(memory: PartitionMemory, group: Sequence[Submission]) -> Decision:
    """Decide every command of ``group`` in order, each in a span of its own."""
    decision = Decision()
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


def answer(memory: PartitionMemory, decision: Decision) -> None:
    """Give every waiting caller its answer (a refusal is raised to it)."""
    for sub, found, replayed in decision.answers:
        if sub.future.done():
            # Its caller went away (a cancelled request): the decision stands, nobody waits for the answer.
            continue
        if isinstance(found, IdempotencyKeyReused | StreamUnreadable):
            metrics.COMMANDS.labels(sub.command_type, found.code).inc()
            sub.future.set_exception(found)
        elif isinstance(found, DryRun):
            metrics.COMMANDS.labels(sub.command_type, "dry_run").inc()
            sub.future.set_result((found, False))
        else:
            final = memory.known[sub.command_id].outcome if sub.command_id in memory.known else found
            label = "replayed" if replayed else "accepted" if isinstance(final, Accepted) else "rejected"
            metrics.COMMANDS.labels(sub.command_type, label).inc()
            sub.future.set_result((final, replayed))


def _decide_one(memory: PartitionMemory, sub: Submission, decision: Decision) -> tuple[Answer, bool]:
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
        outcome = _accept(memory, sub, Held(state, version), result, decision, ctx.now)
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
            now: datetime) -> Accepted:
    evolve = DECIDERS[sub.category].evolve
    state, version = before.state, before.version
    views: list[EventView] = []
    agent = sub.agent or AgentMetadata()
    # Called inside the command's decide span: its events carry that span's context through the log.
    traceparent, tracestate = current_trace_headers()
    for event in events:
        version += 1
        state = evolve(state, event)
        name = event_name(event)
        env = Envelope(
            event_id=str(uuid.uuid4()), stream=sub.stream, stream_version=version, type=name,
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
