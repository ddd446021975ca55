"""Traces that cross the log: HTTP request → decide → append → event headers → projector batch → change_log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from blackboard.app import Runtime
from blackboard.config import Settings
from tests.integration.harness import read_events, running

CREATE = {"type": "project.create", "payload": {"title": "t", "currency": "EUR", "budget_total": "10.00"}}


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends, kept in memory for the tests of this module.

    Note: OpenTelemetry takes one global tracer provider per process; this installs an SDK
    provider only if none is there, adds its exporter to it, and stops the exporter (which then
    drops what it is given) when the module is done.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), f"a tracer provider of another kind is installed: {provider!r}"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def traceparent(trace_id: str, span_id: str = "00f067aa0ba902b7") -> str:
    return f"00-{trace_id}-{span_id}-01"


async def post(client: httpx.AsyncClient, stream: str, headers: dict[str, str] | None = None) -> httpx.Response:
    response = await client.post("/v1/commands", json={**CREATE, "stream": stream}, headers=headers or {})
    assert response.status_code == 200, response.text
    return response


async def history(client: httpx.AsyncClient, stream: str, token: str) -> list[dict[str, Any]]:
    """The stream's audit trail once the projection has passed ``token`` (the command's position)."""
    response = await client.get(f"/v1/streams/{stream}/history", params={"consistent_with": token})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_the_callers_trace_id_reaches_the_log_and_the_change_log(settings: Settings) -> None:
    trace_id = uuid.uuid4().hex
    async with running(settings) as (client, runtime):
        traced = await post(client, "project:tr-1", {"traceparent": traceparent(trace_id)})
        untraced = await post(client, "project:tr-2")
        assert traced.headers["traceparent"].split("-")[1] == trace_id

        entries = await history(client, "project:tr-1", traced.json()["position"])
        assert [e["trace_id"] for e in entries] == [trace_id]
        assert await _change_log_trace_id(runtime, traced.json()["command_id"]) == trace_id
        # Without a traceparent the command's trace is a new one (a root span), or none when no
        # tracer provider is installed: the row says exactly what the answer said.
        await history(client, "project:tr-2", untraced.json()["position"])
        answered = untraced.headers.get("traceparent")
        expected = answered.split("-")[1] if answered else None
        assert await _change_log_trace_id(runtime, untraced.json()["command_id"]) == expected

        assert runtime.log is not None
        events = {e.envelope.stream: e.envelope for e in await read_events(runtime.log, settings.events_topic)}
        written = events["project:tr-1"].traceparent
        assert written is not None and written.split("-")[1] == trace_id


async def _change_log_trace_id(runtime: Runtime, command_id: str) -> str | None:
    assert runtime.pool is not None
    value: str | None = await runtime.pool.fetchval("SELECT trace_id FROM change_log WHERE command_id = $1",
                                                    command_id)
    return value


async def test_one_trace_holds_the_command_and_the_projector_links_to_it(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    async with running(settings) as (client, _):
        answered = await post(client, "project:tr-3")
        trace_id, http_span_id = answered.headers["traceparent"].split("-")[1:3]
        await history(client, "project:tr-3", answered.json()["position"])
        batch = await _batch_span_linked_to(spans, trace_id)

        given = uuid.uuid4().hex
        continued = await post(client, "project:tr-4", {"traceparent": traceparent(given)})

    http = _one(spans, trace_id, "POST /v1/commands")
    decide = _one(spans, trace_id, "decide project.create")
    append = _one(spans, trace_id, f"append {settings.events_topic}")
    assert http.kind is SpanKind.SERVER and http.parent is None
    assert format_span_id(http.context.span_id) == http_span_id
    assert decide.parent is not None and decide.parent.span_id == http.context.span_id
    assert append.kind is SpanKind.PRODUCER
    assert append.parent is not None and append.parent.span_id == decide.context.span_id

    assert batch.kind is SpanKind.CONSUMER and batch.parent is None
    assert batch.context.trace_id != http.context.trace_id
    assert any(link.context.span_id == decide.context.span_id for link in batch.links)
    cache = [s for s in spans.get_finished_spans() if s.name == "cache write-through"
             and s.parent is not None and s.parent.span_id == batch.context.span_id]
    assert len(cache) == 1

    # A caller's traceparent is the parent of the HTTP span.
    assert continued.headers["traceparent"].split("-")[1] == given
    http = _one(spans, given, "POST /v1/commands")
    assert http.parent is not None and http.parent.is_remote
    assert format_span_id(http.parent.span_id) == "00f067aa0ba902b7"


async def _batch_span_linked_to(spans: InMemorySpanExporter, trace_id: str) -> ReadableSpan:
    """The projector's batch span that links to ``trace_id``; it ends just after its commit, so wait a little."""
    for _ in range(100):
        found = [s for s in spans.get_finished_spans() if s.name.startswith("project ")
                 and any(format_trace_id(link.context.trace_id) == trace_id for link in s.links)]
        if found:
            assert len(found) == 1, found
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no projector batch span links to trace {trace_id}")


def _one(spans: InMemorySpanExporter, trace_id: str, name: str) -> ReadableSpan:
    found = [s for s in spans.get_finished_spans()
             if s.name == name and s.context is not None and format_trace_id(s.context.trace_id) == trace_id]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


async def test_commands_appended_together_keep_their_own_traces(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    given = [uuid.uuid4().hex for _ in range(8)]
    async with running(settings) as (client, _):
        created = await post(client, "project:tr-5")
        # Concurrent commands of one partition: its owner decides and appends them in groups.
        answers = await asyncio.gather(*(
            client.post("/v1/commands", headers={"traceparent": traceparent(t)},
                        json={"type": "project.add_cost", "stream": "project:tr-5",
                              "payload": {"amount": "1.00", "reason": "r"}})
            for t in given))
        assert [a.status_code for a in answers] == [200] * len(given), [a.text for a in answers]
        last = max(answers, key=lambda a: int(a.json()["version"]))
        entries = await history(client, "project:tr-5", last.json()["position"])
        assert entries[0]["trace_id"] == created.headers["traceparent"].split("-")[1]
        # A budget alert a process manager raised on the way is in its own trace, not one of these.
        entries = [e for e in entries if not e["actor"].startswith("process:")]
        assert {e["command_id"]: e["trace_id"] for e in entries[1:]} == {
            a.json()["command_id"]: t for a, t in zip(answers, given, strict=True)}

    appends = [s for s in spans.get_finished_spans() if s.name == f"append {settings.events_topic}"]
    for trace_id in given:
        decide = _one(spans, trace_id, "decide project.add_cost")
        # Each command's decide span is the parent of its group's append span, or linked from it.
        assert any((s.parent is not None and s.parent.span_id == decide.context.span_id)
                   or any(link.context.span_id == decide.context.span_id for link in s.links) for s in appends)
