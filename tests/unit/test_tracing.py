"""Which trace exporter the environment selects (the global provider itself is set only at start-up), the slow-span
log and the sampler that keeps polls out of the traces."""

from __future__ import annotations

import importlib.util
import time

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased
from opentelemetry.trace import SpanKind, format_trace_id

from blackboard.tracing import (
    NoOrphanClientSpans,
    SlowSpanLog,
    TracingConfigError,
    configure_tracing,
    exporter_name,
    slow_span_threshold,
    span_exporter,
)


@pytest.mark.parametrize(("environ", "name"), [
    ({}, "none"),
    ({"BLACKBOARD_OTEL_EXPORTER": "console"}, "console"),
    ({"BLACKBOARD_OTEL_EXPORTER": " OTLP "}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"BLACKBOARD_OTEL_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "console"}, "none"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
    ({"OTEL_SDK_DISABLED": "true", "BLACKBOARD_OTEL_EXPORTER": "console"}, "none"),
])
def test_the_exporter_the_environment_selects(environ: dict[str, str], name: str) -> None:
    assert exporter_name(environ) == name


def test_an_unknown_exporter_is_named() -> None:
    with pytest.raises(TracingConfigError, match="'zipkin' is not one of console, otlp, none"):
        exporter_name({"BLACKBOARD_OTEL_EXPORTER": "zipkin"})


def test_exporters() -> None:
    assert isinstance(span_exporter("console"), ConsoleSpanExporter)
    assert span_exporter("none") is None
    try:
        otlp_installed = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        otlp_installed = False
    # Without the optional package OTLP is off (and says so in the log), never a failed start.
    assert (span_exporter("otlp") is not None) == otlp_installed


def test_nothing_is_installed_when_nothing_is_asked() -> None:
    assert configure_tracing({}) is None


@pytest.mark.parametrize(("environ", "threshold"), [
    ({}, 1000.0), ({"BLACKBOARD_SLOW_SPAN_MS": " 250 "}, 250.0), ({"BLACKBOARD_SLOW_SPAN_MS": "0"}, None),
])
def test_the_slow_span_threshold(environ: dict[str, str], threshold: float | None) -> None:
    assert slow_span_threshold(environ) == threshold


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_a_threshold_that_is_no_duration_is_named(value: str) -> None:
    with pytest.raises(TracingConfigError, match="BLACKBOARD_SLOW_SPAN_MS"):
        slow_span_threshold({"BLACKBOARD_SLOW_SPAN_MS": value})


def test_neither_an_exporter_nor_the_slow_span_log_installs_nothing() -> None:
    assert configure_tracing({"BLACKBOARD_SLOW_SPAN_MS": "0"}) is None
    assert configure_tracing({"BLACKBOARD_SLOW_SPAN_MS": "5", "OTEL_SDK_DISABLED": "true"}) is None


def test_a_client_span_outside_any_trace_is_not_recorded() -> None:
    """A poll of PostgreSQL or Redis outside a request or batch starts no trace; inside one it is recorded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=NoOrphanClientSpans()))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("check")
    with tracer.start_as_current_span("poll", kind=SpanKind.CLIENT):
        pass
    with tracer.start_as_current_span("GET /v1/projects/{id}", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            pass
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["GET /v1/projects/{id}", "SELECT"]


def test_a_span_past_the_threshold_is_logged_with_its_own_ids() -> None:
    captured = structlog.testing.CapturingLogger()
    provider = TracerProvider()
    # No processors: each line's fields reach the capturing logger as they are.
    provider.add_span_processor(SlowSpanLog(threshold_ms=20, logger=structlog.wrap_logger(captured, processors=[])))
    tracer = provider.get_tracer("check")
    with tracer.start_as_current_span("slow") as slow:
        time.sleep(0.03)
    with tracer.start_as_current_span("quick"):
        pass
    logged = [call.kwargs for call in captured.calls]
    assert [(call.method_name, e["event"], e["span"]) for call, e in zip(captured.calls, logged, strict=True)] == [
        ("warning", "span.slow", "slow")]
    assert logged[0]["trace_id"] == format_trace_id(slow.get_span_context().trace_id)
    assert logged[0]["duration_ms"] >= 30
