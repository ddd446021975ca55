"""Spans of one command end to end, with the libraries' instrumentations (HTTP, PostgreSQL, Redis, gRPC); a span
over the slow-span threshold logged as one JSON line; a write refused by the fence counted by partition."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from blackboard.command_api.group_commit import append_events
from blackboard.command_api.owner import append_marker
from blackboard.config import Settings
from blackboard.events.log import OffsetConflict, PartitionedLog, Record
from blackboard.tracing import instrument_libraries, uninstrument_libraries
from tests.integration.harness import running, settings_for

CREATE = {"type": "project.create", "payload": {"title": "t", "currency": "EUR", "budget_total": "10.00"}}


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span ended while this module runs, with the libraries instrumented (undone afterwards).

    Note: OpenTelemetry takes one global tracer provider per process: this adds its exporter to the one
    there (installing an SDK one when there is none) and stops it when the module is done.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), f"a tracer provider of another kind is installed: {provider!r}"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument_libraries()
    yield exporter
    uninstrument_libraries()
    exporter.shutdown()


@pytest.fixture
def traced_settings(pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> Settings:
    """The PostgreSQL log (its appends are PostgreSQL statements), Redis, and gRPC on a free port."""
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                        redis_prefix=redis_prefix, grpc_port=0)


def _in_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.context is not None and s.context.trace_id == trace_id]


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def _named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, sorted(s.name for s in spans))
    return found[0]


async def _projector_batch(spans: InMemorySpanExporter, decide: ReadableSpan) -> ReadableSpan:
    """The projector's batch span linked to ``decide``; it ends just after its commit, so wait a little."""
    assert decide.context is not None
    for _ in range(100):
        found = [s for s in spans.get_finished_spans() if s.name.startswith("project ")
                 and any(link.context.span_id == decide.context.span_id for link in s.links)]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no projector batch span links to the command")


async def test_one_command_end_to_end_has_every_stage_and_library_span(
        traced_settings: Settings, spans: InMemorySpanExporter) -> None:
    async with running(traced_settings) as (client, runtime):
        made = await client.post("/v1/commands", json={**CREATE, "stream": "project:obs-1"})
        assert made.status_code == 200, made.text
        trace_id = int(made.headers["traceparent"].split("-")[1], 16)
        read = await client.get("/v1/projects/obs-1", params={"consistent_with": made.json()["position"]})
        assert read.status_code == 200, read.text
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.grpc_port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        command = _in_trace(spans, trace_id)
        decide = _named(command, "decide project.create")
        batch = await _projector_batch(spans, decide)

    # The command: its server span, the decision, the fenced append and the append's PostgreSQL statements.
    http = _named(command, "POST /v1/commands")
    append = _named(_children(command, decide), f"append {traced_settings.events_topic}")
    assert http.kind is SpanKind.SERVER and decide.parent is not None and decide.parent.span_id == http.context.span_id
    statements = _children(command, append)
    assert statements and all(s.kind is SpanKind.CLIENT and s.attributes is not None
                              and s.attributes.get("db.system") == "postgresql" for s in statements), statements
    # The projector: its batch in a trace of its own, its transaction's statements and the cache's Redis commands.
    projected = _in_trace(spans, batch.context.trace_id)
    assert any(s.attributes and s.attributes.get("db.system") == "postgresql" for s in _children(projected, batch))
    cache = _named(_children(projected, batch), "cache write-through")
    cached = [s.attributes.get("db.system") for s in _children(projected, cache) if s.attributes]
    assert cached and set(cached) == {"redis"}, cached
    # The read: a server span from the ASGI instrumentation, named by its route, over the read's own calls.
    reads = [s for s in spans.get_finished_spans()
             if s.kind is SpanKind.SERVER and s.name.startswith("GET /v1/projects")]
    assert len(reads) == 1, [s.name for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert {s.attributes.get("db.system") for s in _children(_in_trace(spans, reads[0].context.trace_id), reads[0])
            if s.attributes} & {"postgresql", "redis"}
    # gRPC: a server span per call.
    assert [s.name for s in spans.get_finished_spans()
            if s.kind is SpanKind.SERVER and "grpc.health" in s.name] == ["/grpc.health.v1.Health/Check"]


def test_a_span_past_the_threshold_is_one_json_line() -> None:
    """In a process of its own: the global tracer provider and the log's set-up are once per process."""
    program = textwrap.dedent("""
        import time
        from opentelemetry import trace
        from blackboard.logs import configure_logging
        from blackboard.tracing import configure_tracing

        configure_logging()
        assert configure_tracing() is not None, "the threshold alone records spans"
        tracer = trace.get_tracer("check")
        with tracer.start_as_current_span("slow one"):
            time.sleep(0.06)
        with tracer.start_as_current_span("quick one"):
            pass
    """)
    env = {"BLACKBOARD_SLOW_SPAN_MS": "40", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    slow = [line for line in lines if line.get("event") == "span.slow"]
    assert [line["span"] for line in slow] == ["slow one"], done.stderr
    line = slow[0]
    assert line["duration_ms"] >= 60 and line["threshold_ms"] == 40 and line["level"] == "warning"
    assert len(line["trace_id"]) == 32 and int(line["trace_id"], 16) != 0 and len(line["span_id"]) == 16


def _fenced(partition: int) -> float:
    value = REGISTRY.get_sample_value("blackboard_fenced_writes_total", {"partition": str(partition)})
    return value or 0.0


async def test_a_write_refused_by_the_fence_is_counted_by_partition(log: PartitionedLog) -> None:
    topic = f"fenced-{uuid.uuid4().hex[:8]}"
    await log.create_topic(topic, 2)
    await log.append(topic, 1, [Record(key=b"k", value=b"another writer's")])
    before = _fenced(1), _fenced(0)
    # A writer whose state ends at offset 0 of partition 1: another writer has appended since.
    with pytest.raises(OffsetConflict):
        await append_events(log, topic, 1, [Record(key=b"k", value=b"stale")], at=0)
    with pytest.raises(OffsetConflict):
        await append_marker(log, topic, 1, member="zombie", epoch=1, at=0, now=datetime.now(UTC))
    assert (_fenced(1), _fenced(0)) == (before[0] + 2, before[1])
    # A write at the right place is not counted.
    await append_events(log, topic, 0, [Record(key=b"k", value=b"fine")], at=0)
    assert (_fenced(1), _fenced(0)) == (before[0] + 2, before[1])
