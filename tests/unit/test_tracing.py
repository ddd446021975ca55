"""Which trace exporter the environment selects (the global provider itself is set only at start-up)."""

from __future__ import annotations

import importlib.util

import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from blackboard.tracing import TracingConfigError, configure_tracing, exporter_name, span_exporter


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
