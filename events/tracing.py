"""The W3C trace context an event carries: written by the command that made it, read by whoever folds it.

The writer stores the context of the span that decided the command in the envelope's
``traceparent`` and ``tracestate`` (the codec turns them into record headers of the same
names); a reader turns them back into a span context to link its own spans to.

Note: the log's headers are a storage format, so they are always W3C trace context
(``TraceContextTextMapPropagator``), whatever ``OTEL_PROPAGATORS`` selects for HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanContext, format_trace_id
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from blackboard.schemas.envelope import Envelope

_W3C = TraceContextTextMapPropagator()


def current_trace_headers(context: Context | None = None) -> tuple[str | None, str | None]:
    """``(traceparent, tracestate)`` of the current span (of ``context``'s, when given); ``(None, None)`` when
    there is no valid one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context)
    return carrier.get("traceparent"), carrier.get("tracestate") or None


def spans_recorded() -> bool:
    """Whether a tracer provider is installed, so that a span started now may be recorded.

    Note: without one (the API's proxy or no-op provider), a span started is the parent's span again and
    records nothing; a hot path asks once per batch and skips its spans, which cost several microseconds
    each even then. What the skipped spans would have given is the same: the parent's trace context.
    """
    # The global the API's proxy tracers look at on every span: ``get_tracer_provider()`` also looks into
    # ``os.environ`` each time, which cost more than the rest of this check.
    provider = trace._TRACER_PROVIDER
    return provider is not None and not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)


def event_span_context(env: Envelope) -> SpanContext | None:
    """The span context ``env`` was written under, or ``None`` (no header, or one that is not W3C)."""
    if env.traceparent is None:
        return None
    return _extract(env.traceparent, env.tracestate)


def distinct(contexts: Iterable[SpanContext | None]) -> list[SpanContext]:
    """The valid ``contexts``, each span once, in their first order (a ``SpanContext`` is not hashable)."""
    seen: dict[tuple[int, int], SpanContext] = {}
    for context in contexts:
        if context is not None and context.is_valid:
            seen.setdefault((context.trace_id, context.span_id), context)
    return list(seen.values())


def event_trace_id(env: Envelope) -> str | None:
    """The 32 lowercase hex digits of the trace ``env`` was written under, or ``None``."""
    context = event_span_context(env)
    return format_trace_id(context.trace_id) if context is not None else None


# Every event of one command carries the same header: a small cache spares the parsing of the repeats.
@lru_cache(maxsize=1024)
def _extract(traceparent: str, tracestate: str | None) -> SpanContext | None:
    carrier = {"traceparent": traceparent, **({"tracestate": tracestate} if tracestate else {})}
    context = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return context if context.is_valid else None
