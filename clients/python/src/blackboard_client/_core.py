"""What the sync and the async client share, without I/O: request bodies, answers, retry decisions, the
session's consistency token and the parsing of Server-Sent Events."""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from blackboard_client.commands import COMMANDS, TYPE_OF
from blackboard_client.errors import RETRYABLE_STATUSES, ApiError, Rejected
from blackboard_client.models import Accepted, DryRun

JSON = "application/json"
CONSISTENCY = "Blackboard-Consistency"
#: Backoff between attempts: ``WAIT_INITIAL * 2**n`` capped at ``WAIT_MAX``, plus up to ``WAIT_JITTER`` at random.
WAIT_INITIAL, WAIT_MAX, WAIT_JITTER = 0.05, 5.0, 0.25
#: Seconds after a command was spooled during which the next ones are spooled without trying the server.
OFFLINE_RECHECK = 1.0
#: The longest ``Retry-After`` honoured as given, in seconds; a longer one is cut to this.
MAX_RETRY_AFTER = 60.0

Payload = Mapping[str, Any] | msgspec.Struct


def new_command_id() -> str:
    """A fresh command id (the server accepts ``[A-Za-z0-9._:-]{1,128}``)."""
    return f"c-{uuid.uuid4().hex}"


def payload_of(type_: str, payload: Payload) -> dict[str, Any]:
    """``payload`` as JSON-ready builtins, checked against the builder of ``type_`` when there is one.

    Raises ``TypeError`` for a builder of another command type, and ``msgspec.ValidationError`` (naming
    the field's JSON path) for a field the server would refuse.
    """
    if isinstance(payload, msgspec.Struct):
        built_for = TYPE_OF.get(type(payload))
        if built_for is not None and built_for != type_:
            raise TypeError(f"{type(payload).__name__} builds {built_for!r}, not {type_!r}")
        data: dict[str, Any] = msgspec.to_builtins(payload)
    else:
        data = msgspec.to_builtins(dict(payload))
    builder = COMMANDS.get(type_)
    if builder is not None:
        msgspec.convert(data, builder, strict=False)
    return data


def command_body(type_: str, stream: str, payload: Payload, *, command_id: str, expected_version: int | None,
                 dry_run: bool, extra: Mapping[str, Any] | None = None) -> bytes:
    """The JSON body of ``POST /v1/commands``."""
    body: dict[str, Any] = {"type": type_, "stream": stream, "payload": payload_of(type_, payload),
                            "command_id": command_id}
    if expected_version is not None:
        body["expected_version"] = expected_version
    if dry_run:
        body["dry_run"] = True
    body.update({k: v for k, v in (extra or {}).items() if v is not None})
    return msgspec.json.encode(body)


_ACCEPTED = msgspec.json.Decoder(Accepted)
_DRY_RUN = msgspec.json.Decoder(DryRun)


def outcome(status: int, content: bytes, command_id: str) -> Accepted | DryRun:
    """The outcome of a command's answer; raises ``Rejected`` (409 with an outcome) or ``ApiError``."""
    if status == 200:
        kind = msgspec.json.decode(content).get("outcome")
        return _DRY_RUN.decode(content) if kind == "dry_run" else _ACCEPTED.decode(content)
    if status == 409:
        body = _json_or_none(content)
        if isinstance(body, dict) and body.get("outcome") == "rejected":
            raise Rejected(str(body.get("code")), str(body.get("message")), body.get("command_id") or command_id,
                           body.get("details") or {})
    raise api_error(status, content)


def checkpoint_outcome(response: httpx.Response, command_id: str, session: Session | None) -> dict[str, Any]:
    """A checkpoint save's or restore's answer (its ``seq``, ``sha256``, ``position``…); raises like ``outcome``."""
    if response.status_code != 200:
        outcome(response.status_code, response.content, command_id)
    answer: dict[str, Any] = msgspec.json.decode(response.content)
    if session is not None and answer.get("position"):
        session.note(answer["position"])
    return answer


def refuses_the_client(error: ApiError) -> bool:
    """Whether ``error`` refuses the client itself (its key or token, or a scope it lacks), not one command: the
    commands stay spooled until the credential changes (``read_only_key``: servers before scopes)."""
    return error.status == 401 or (error.status == 403 and error.code in ("insufficient_scope", "read_only_key"))


def api_error(status: int, content: bytes) -> ApiError:
    """The ``ApiError`` of an error answer: a problem document (RFC 9457) with its ``code`` when the server
    sent one (``detail``, or ``message`` from a server of an earlier release), else the answer's text."""
    body = _json_or_none(content)
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        text = body.get("detail") if isinstance(body.get("detail"), str) else body.get("message", "")
        return ApiError(status, body["code"], str(text), list(body.get("errors") or []),
                        type=_text(body.get("type")), title=_text(body.get("title")),
                        instance=_text(body.get("instance")))
    return ApiError(status, f"http_{status}", content[:500].decode(errors="replace"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _json_or_none(content: bytes) -> Any:
    try:
        return msgspec.json.decode(content)
    except msgspec.DecodeError:
        return None


# ── retries ────────────────────────────────────────────────────────────────────────────


class RetryableStatus(Exception):
    """An answer worth trying again (429, 502, 503, 504), and the wait its ``Retry-After`` asked for."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} from {response.request.url}")
        self.response = response
        self.wait = retry_after(response.headers.get("retry-after"))


def retry_after(value: str | None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when - time.time()), MAX_RETRY_AFTER)


def check_status(response: httpx.Response) -> httpx.Response:
    """``response``, or ``RetryableStatus`` when its status says to try again."""
    if response.status_code in RETRYABLE_STATUSES:
        raise RetryableStatus(response)
    return response


def backoff_hook(*, give_up_on_connect: bool,
                 deadline_at: float | None = None) -> Callable[[BaseException], bool | float]:
    """Whether (and after how long, for a ``Retry-After``) to try a failed attempt again.

    With ``give_up_on_connect`` a refused connection is not retried: the caller spools instead of waiting.
    A ``Retry-After`` longer than what is left before ``deadline_at`` (a ``time.monotonic()``) gives up at once.
    """
    def hook(exc: BaseException) -> bool | float:
        if isinstance(exc, RetryableStatus):
            if exc.wait is None:
                return True
            if deadline_at is not None and time.monotonic() + exc.wait > deadline_at:
                return False
            return exc.wait
        if isinstance(exc, httpx.UnsupportedProtocol):
            return False
        if give_up_on_connect and isinstance(exc, httpx.ConnectError):
            return False
        return isinstance(exc, httpx.TransportError)
    return hook


@dataclass
class Reconnect:
    """Waits between reconnections of a change stream: doubling from ``WAIT_INITIAL`` to ``WAIT_MAX``, with
    jitter; back to the start once the stream delivered something."""

    failures: int = 0

    def reset(self) -> None:
        self.failures = 0

    def next_wait(self) -> float:
        self.failures += 1
        return min(WAIT_MAX, WAIT_INITIAL * 2.0 ** (self.failures - 1)) + random.uniform(0, WAIT_JITTER)

    def sleep(self) -> None:
        time.sleep(self.next_wait())

    async def asleep(self) -> None:
        await asyncio.sleep(self.next_wait())


# ── session consistency ────────────────────────────────────────────────────────────────


@dataclass
class Session:
    """The positions of every command this client had accepted: reads wait until the read models passed them.

    Note: a token is ``"<partition>:<offset>"`` pairs; merging keeps the highest offset per partition, so the
    token stays as long as the number of partitions however many commands were sent.
    """

    positions: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, position: str) -> None:
        with self.lock:
            for part in position.split(","):
                p, _, o = part.partition(":")
                if p.isdigit() and o.isdigit():
                    self.positions[int(p)] = max(self.positions.get(int(p), -1), int(o))

    def token(self) -> str | None:
        with self.lock:
            return ",".join(f"{p}:{o}" for p, o in sorted(self.positions.items())) or None


def read_headers(session: Session | None, consistent_with: str | None) -> dict[str, str]:
    """The consistency header of a read: the explicit token, else the session's."""
    token = consistent_with or (session.token() if session is not None else None)
    return {CONSISTENCY: token} if token else {}


# ── Server-Sent Events ─────────────────────────────────────────────────────────────────


@dataclass
class SseParser:
    """Turns the lines of an event stream into ``(id, data)`` pairs; comments (keep-alives) are skipped."""

    data: list[str] = field(default_factory=list)
    id: str | None = None

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if line == "":
            if not self.data:
                return None
            found = (self.id, "\n".join(self.data))
            self.data, self.id = [], None
            return found
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


def entries(parser: SseParser, lines: Iterator[str]) -> Iterator[tuple[int, Any]]:
    """``(version, entry)`` of each complete event among ``lines``."""
    for line in lines:
        event = parser.feed(line)
        if event is not None and event[0] is not None and event[0].isdigit():
            yield int(event[0]), msgspec.json.decode(event[1])
