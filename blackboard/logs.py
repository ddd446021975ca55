"""Structured logs: one JSON object per line on stderr, ours and the libraries' (aiokafka, asyncpg, uvicorn).

Every line carries the context bound by each layer and, inside an HTTP request, its ``request_id``
(``X-Request-ID``, echoed in the answer) and ``trace_id``/``span_id``. A traceback is a JSON field
(``exception``), never lines of text. ``BLACKBOARD_LOG_LEVEL`` sets the least level logged;
``BLACKBOARD_ACCESS_LOG=true`` adds a line per HTTP request (``http.access``).
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, Processor, WrappedLogger

from blackboard.config import LogSettings
from blackboard.tracing import add_trace_ids

#: The libraries' loggers are quieter than ours unless a level is set: their info lines are noise.
LIBRARY_LEVEL = logging.WARNING
ACCESS_LOGGER = "uvicorn.access"
#: A request id a client may choose: short, printable, nothing that could forge a log line.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: W3C ``traceparent``: version, trace id, parent span id, flags.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def configure_logging(level: int = logging.INFO) -> None:
    """Route structlog and the standard library's logging to JSON lines on stderr.

    ``level`` is ours unless ``BLACKBOARD_LOG_LEVEL`` says otherwise; that setting also sets the
    libraries' level, else they log warnings and worse.
    """
    settings = LogSettings()
    chosen = logging.getLevelNamesMapping()[settings.log_level.upper()] if settings.log_level else None
    ours = chosen if chosen is not None else level
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        # No locals: a frame's variables may hold a key, a password or a client's data.
        structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(ours),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_from_stdlib, *shared], pass_foreign_args=True,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen if chosen is not None else max(level, LIBRARY_LEVEL))
    # The access log is switched by its own setting, whatever the level.
    access = logging.getLogger(ACCESS_LOGGER)
    access.setLevel(logging.INFO if settings.access_log else logging.CRITICAL + 1)
    access.propagate = True


def _from_stdlib(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A standard library record as our fields: its logger's name and, for the access log, the request."""
    record: logging.LogRecord | None = event_dict.get("_record")
    if record is None:
        return event_dict
    event_dict["logger"] = record.name
    args = event_dict.pop("positional_args", None)
    if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
        client, method, path, http_version, status = args
        event_dict.update(event="http.access", client=client, method=method, path=path, http_version=http_version,
                          status=status)
    if record.exc_info and "exc_info" not in event_dict:
        event_dict["exc_info"] = record.exc_info
    return event_dict


def with_request_context(app: ASGIApp) -> ASGIApp:
    """``app`` with each HTTP request's id (and trace id) bound to every log line it causes.

    The id is the client's ``X-Request-ID`` when it is a sane one, else a new one; the answer
    carries it back in ``X-Request-ID``.
    """

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await app(scope, receive, send)
            return
        given, traceparent = _context_headers(scope.get("headers", ()))
        request_id = given if _REQUEST_ID.match(given) else secrets.token_hex(16)
        context: dict[str, Any] = {"request_id": request_id}
        traced = _TRACEPARENT.match(traceparent)
        if traced:
            context["trace_id"], context["parent_span_id"] = traced.group(1), traced.group(2)
        echoed = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message["headers"] = [*message.get("headers", []), echoed]
            await send(message)

        # Bound and reset by tokens: each key gets back exactly what it held (structlog's ``bound_contextvars``
        # reads the whole context to do so, on every request).
        tokens = structlog.contextvars.bind_contextvars(**context)
        try:
            await app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    return wrapped


def _context_headers(headers: Any) -> tuple[str, str]:
    """The ``X-Request-ID`` and ``traceparent`` of a request's raw headers ("" when absent; the last of a repeated
    one), found without decoding every other header."""
    given = traceparent = ""
    for name, value in headers:
        if len(name) == 12 and name.lower() == b"x-request-id":
            given = value.decode("latin-1")
        elif len(name) == 11 and name.lower() == b"traceparent":
            traceparent = value.decode("latin-1")
    return given, traceparent
