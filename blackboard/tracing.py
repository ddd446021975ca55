"""The OpenTelemetry SDK of a process: a tracer provider and an exporter, when the environment asks for one.

The rooms use only the OpenTelemetry API; until this sets a provider their spans are no-ops
(a ``traceparent`` received over HTTP still reaches the log and the change log). Which exporter:

* ``BLACKBOARD_OTEL_EXPORTER`` — ``console`` (spans as JSON on stdout), ``otlp`` or ``none``;
* else the standard ``OTEL_TRACES_EXPORTER`` (the same names);
* else ``otlp`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set;
* else none. ``OTEL_SDK_DISABLED=true`` turns it all off.

Once spans are recorded, the OpenTelemetry instrumentations add theirs: every HTTP request but
``POST /v1/commands`` (which makes its own server span) through the ASGI middleware, every
PostgreSQL statement (asyncpg), Redis command and gRPC call. A database or Redis call made outside
any request or batch (a reader's poll, a listener) starts no trace of its own (unless
``OTEL_TRACES_SAMPLER`` chooses a sampler of the SDK's instead).

A span that lasts ``BLACKBOARD_SLOW_SPAN_MS`` (1000 by default; 0: never) or longer is logged as
one ``span.slow`` line with its name, duration and trace id. Setting it records spans even with no
exporter, for that log alone.

OTLP needs the optional extra ``blackboard-server[otlp]`` (OTLP over HTTP/protobuf); the exporter reads
its own ``OTEL_EXPORTER_OTLP_*`` settings, and the resource takes ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (service name ``blackboard`` by default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes
from structlog.typing import EventDict, WrappedLogger

if TYPE_CHECKING:
    from litestar.middleware.base import DefineMiddleware
    from opentelemetry.trace.span import TraceState

log = structlog.get_logger(__name__)

EXPORTERS = ("console", "otlp", "none")
#: Milliseconds past which a span is logged (``BLACKBOARD_SLOW_SPAN_MS``) when nothing else is said.
SLOW_SPAN_MS = 1000.0
#: Paths the HTTP middleware makes no span for: commands make their own, health and metrics are noise.
UNTRACED_PATHS = ["^/v1/commands$", "^/health/", "^/metrics"]


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A log processor: the current span's ``trace_id`` and ``span_id`` (hex, as OpenTelemetry prints them).

    Note: without a tracer provider spans are not recorded; the trace id a request brought in its
    ``traceparent`` is bound by the request's log context instead (``blackboard.logs``).
    """
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        # A line about another span (``span.slow``) names that one: keep what the line says.
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


class TracingConfigError(ValueError):
    """An exporter name that is none of ``EXPORTERS``."""


def exporter_name(environ: Mapping[str, str]) -> str:
    """The exporter the environment selects: one of ``EXPORTERS``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    name = environ.get("BLACKBOARD_OTEL_EXPORTER") or environ.get("OTEL_TRACES_EXPORTER")
    if not name:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return "otlp" if any(environ.get(e) for e in endpoints) else "none"
    name = name.strip().lower()
    if name not in EXPORTERS:
        raise TracingConfigError(f"trace exporter {name!r} is not one of {', '.join(EXPORTERS)}")
    return name


def span_exporter(name: str) -> SpanExporter | None:
    """The exporter called ``name``; ``None`` for ``none``, or for ``otlp`` without its package.

    Note: a missing OTLP package is logged, not raised: tracing is worth a warning, not a
    service that will not start.
    """
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("tracing.otlp_unavailable", hint="pip install 'blackboard-server[otlp]'")
            return None
        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    return None


def slow_span_threshold(environ: Mapping[str, str]) -> float | None:
    """Milliseconds past which a finished span is logged (``BLACKBOARD_SLOW_SPAN_MS``); ``None``: never."""
    raw = environ.get("BLACKBOARD_SLOW_SPAN_MS", "").strip()
    if not raw:
        return SLOW_SPAN_MS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses NaN
        raise TracingConfigError(f"BLACKBOARD_SLOW_SPAN_MS={raw!r} is not a number of milliseconds >= 0")
    return value or None


class SlowSpanLog(SpanProcessor):
    """Logs each span that lasted ``threshold_ms`` or longer: one ``span.slow`` line with its name, duration and ids."""

    def __init__(self, threshold_ms: float, logger: Any = None) -> None:
        """``logger``: a structlog logger (this module's by default)."""
        self.threshold_ms = threshold_ms
        self.log = logger if logger is not None else log

    def on_end(self, span: ReadableSpan) -> None:
        if span.start_time is None or span.end_time is None or span.context is None:
            return
        duration_ms = (span.end_time - span.start_time) / 1e6
        if duration_ms < self.threshold_ms:
            return
        self.log.warning("span.slow", span=span.name, kind=span.kind.name.lower(), duration_ms=round(duration_ms, 3),
                    threshold_ms=self.threshold_ms, trace_id=trace.format_trace_id(span.context.trace_id),
                    span_id=trace.format_span_id(span.context.span_id))


class NoOrphanClientSpans(Sampler):
    """Samples every root span except a client's (a statement or a Redis command outside any request or batch).

    Note: readers poll PostgreSQL and listeners wait on it all the time; a trace for each poll
    would bury the ones that explain a request.
    """

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: TraceState | None = None) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP, None, trace_state)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)

    def get_description(self) -> str:
        return "NoOrphanClientSpans"


def recording() -> bool:
    """Whether spans are recorded: an SDK tracer provider is installed (``configure_tracing``, or a test's)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


class _Instrumentor(Protocol):
    """What this module uses of an OpenTelemetry ``BaseInstrumentor``."""

    @property
    def is_instrumented_by_opentelemetry(self) -> bool: ...

    def instrument(self, **kwargs: Any) -> None: ...

    def uninstrument(self, **kwargs: Any) -> None: ...


def _instrumentors() -> list[_Instrumentor]:
    """The OpenTelemetry instrumentations of PostgreSQL (asyncpg), Redis and the gRPC server (each a singleton)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # Two of the three constructors are not annotated.
    return [AsyncPGInstrumentor(), RedisInstrumentor(), GrpcAioInstrumentorServer()]  # type: ignore[no-untyped-call]


def instrument_libraries() -> None:
    """Spans for every PostgreSQL statement (asyncpg), Redis command and gRPC call: the OpenTelemetry instrumentations.

    Note: they patch the libraries for the whole process, and the gRPC one only servers made after
    it: call this before the services start. Calling it again changes nothing.
    """
    for instrumentor in _instrumentors():
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def uninstrument_libraries() -> None:
    """Undo ``instrument_libraries`` (for tests that instrument for a while)."""
    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def http_middleware() -> list[DefineMiddleware]:
    """The OpenTelemetry ASGI middleware (a server span for each request, named by its route) while spans are
    recorded; none otherwise, so an untraced process pays nothing for it."""
    if not recording():
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig

    return [OpenTelemetryConfig(exclude=UNTRACED_PATHS, exclude_spans=["receive", "send"]).middleware]


def configure_tracing(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install a global tracer provider exporting as the environment says, the slow-span log and the libraries'
    instrumentations; ``None`` (no-op) when the environment asks for neither an exporter nor the slow-span log.

    Note: OpenTelemetry takes a global provider once per process; call this once, at start-up.
    """
    env = os.environ if environ is None else environ
    exporter = span_exporter(exporter_name(env))
    threshold = slow_span_threshold(env)
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    asked_for_slow_spans = bool(env.get("BLACKBOARD_SLOW_SPAN_MS", "").strip()) and threshold is not None
    if disabled or (exporter is None and not asked_for_slow_spans):
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "blackboard"}))
    # An operator's own choice of sampler (the SDK reads it when given none) goes before ours.
    sampler = None if env.get("OTEL_TRACES_SAMPLER") else ParentBased(root=NoOrphanClientSpans())
    provider = TracerProvider(resource=resource, sampler=sampler)
    if threshold is not None:
        provider.add_span_processor(SlowSpanLog(threshold))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument_libraries()
    return provider
