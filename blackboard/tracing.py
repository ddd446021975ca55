"""The OpenTelemetry SDK of a process: a tracer provider and an exporter, when the environment asks for one.

The rooms use only the OpenTelemetry API; until this sets a provider their spans are no-ops
(a ``traceparent`` received over HTTP still reaches the log and the change log). Which exporter:

* ``BLACKBOARD_OTEL_EXPORTER`` — ``console`` (spans as JSON on stdout), ``otlp`` or ``none``;
* else the standard ``OTEL_TRACES_EXPORTER`` (the same names);
* else ``otlp`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set;
* else none. ``OTEL_SDK_DISABLED=true`` turns it all off.

OTLP needs the optional extra ``blackboard-server[otlp]`` (OTLP over HTTP/protobuf); the exporter reads
its own ``OTEL_EXPORTER_OTLP_*`` settings, and the resource takes ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (service name ``blackboard`` by default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from structlog.typing import EventDict, WrappedLogger

log = structlog.get_logger(__name__)

EXPORTERS = ("console", "otlp", "none")


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A log processor: the current span's ``trace_id`` and ``span_id`` (hex, as OpenTelemetry prints them).

    Note: without a tracer provider spans are not recorded; the trace id a request brought in its
    ``traceparent`` is bound by the request's log context instead (``blackboard.logs``).
    """
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = trace.format_trace_id(context.trace_id)
        event_dict["span_id"] = trace.format_span_id(context.span_id)
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


def configure_tracing(environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """Install a global tracer provider exporting as the environment says; ``None`` (no-op) when it says none.

    Note: OpenTelemetry takes a global provider once per process; call this once, at start-up.
    """
    exporter = span_exporter(exporter_name(os.environ if environ is None else environ))
    if exporter is None:
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "blackboard"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider
