"""Each HTTP request's id (and trace ids) bound to its log lines, echoed in the answer, and unbound after it."""

from __future__ import annotations

import re
from typing import Any

import structlog

from blackboard.logs import with_request_context

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def call(headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """What the app saw bound while it ran, and the headers of its answer."""
    seen: dict[str, Any] = {}
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(structlog.contextvars.get_contextvars())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    await with_request_context(app)({"type": "http", "headers": headers}, receive, send)
    return seen, sent[0]["headers"]


async def test_a_sane_request_id_and_a_traceparent_are_bound_and_the_id_echoed() -> None:
    seen, answered = await call([(b"Host", b"x"), (b"X-Request-ID", b"req-1"),
                                 (b"traceparent", f"00-{TRACE}-00f067aa0ba902b7-01".encode())])
    assert seen == {"request_id": "req-1", "trace_id": TRACE, "parent_span_id": "00f067aa0ba902b7"}
    assert answered == [(b"content-length", b"0"), (b"x-request-id", b"req-1")]


async def test_a_missing_or_forged_request_id_gets_a_new_one() -> None:
    for headers in ([], [(b"x-request-id", b"forged\nline")]):
        seen, answered = await call(headers)
        assert re.fullmatch(r"[0-9a-f]{32}", seen["request_id"]) and "trace_id" not in seen
        assert answered[-1] == (b"x-request-id", seen["request_id"].encode())


async def test_the_context_is_given_back_as_it_was() -> None:
    structlog.contextvars.clear_contextvars()
    tokens = structlog.contextvars.bind_contextvars(request_id="outer", role="query")
    try:
        seen, _ = await call([(b"x-request-id", b"inner")])
        assert seen == {"request_id": "inner", "role": "query"}
        assert structlog.contextvars.get_contextvars() == {"request_id": "outer", "role": "query"}
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    assert structlog.contextvars.get_contextvars() == {}
