"""faust-streaming for users' own stream processors: typed Blackboard events in, commands out.

A faust app reads Blackboard's ``events`` topic with :func:`events_topic` and gets one
:class:`BlackboardEvent` per record: the envelope plus the payload decoded into today's Struct
(older schema versions upcast). It changes state only through commands, sent with
:class:`CommandClient` under a command id derived from the event that caused them, so a worker
that restarts and processes an event again repeats a command the deciders already answered.

The log keeps the envelope in record headers and only the payload in the value (see
``blackboard.events.codec``). A faust ``Codec`` sees the value alone, so the events topic is
decoded by :class:`BlackboardSchema`, which sees the whole message; :func:`decode_message` does the
same for a message in hand (``stream.events()``). The codec registered as ``"blackboard"``
serialises a :class:`BlackboardEvent` self-contained (envelope and payload in one JSON value), for
the app's own topics, channels and tables.

Note: faust commits offsets some seconds after an event was processed; a crash replays the events
since the last commit. That is harmless only because the command ids are deterministic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, Protocol

import faust
import httpx
import msgspec
from faust.exceptions import ValueDecodeError
from faust.serializers import codecs
from faust.types import AppT
from faust.types.tuples import Message

from blackboard.events.codec import PassedOver, UndecodableRecord, from_record
from blackboard.events.log import StoredRecord

# The broker credentials live beside this module; users import everything faust-related from here.
from blackboard.integrations.faust_broker import broker_credentials as broker_credentials
from blackboard.schemas.envelope import Envelope
from blackboard.schemas.registry import UnknownEventType, decode_event

__all__ = [
    "CODEC_NAME",
    "BlackboardCodec",
    "BlackboardEvent",
    "BlackboardSchema",
    "CommandClient",
    "CommandFailed",
    "CommandResult",
    "EventsTopic",
    "HasEventsTopic",
    "command_id_for",
    "decode_message",
    "events_topic",
]

log = logging.getLogger(__name__)

#: The name the codec is registered under: ``value_serializer="blackboard"``.
CODEC_NAME = "blackboard"


class BlackboardEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the log: its envelope, its payload as a typed Struct, and where the log put it.

    ``payload`` is today's Struct for the event type (``CostAdded``, ``TaskCreated`` …), whatever
    schema version was written. The envelope's fields are also reachable directly
    (``event.stream``, ``event.version``, ``event.type`` …).
    """

    envelope: Envelope
    payload: msgspec.Struct
    partition: int
    offset: int

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def stream(self) -> str:
        return self.envelope.stream

    @property
    def version(self) -> int:
        """The stream version this event made (1, 2, 3 … per stream, no gaps)."""
        return self.envelope.stream_version

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def occurred_at(self) -> datetime:
        return self.envelope.occurred_at

    @property
    def command_id(self) -> str:
        return self.envelope.command_id

    @property
    def correlation_id(self) -> str:
        return self.envelope.correlation_id

    @property
    def causation_id(self) -> str:
        return self.envelope.causation_id

    @property
    def actor(self) -> str:
        """The authenticated principal whose command made this event."""
        return self.envelope.actor


# ---------------------------------------------------------------------------------------------- decoding


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    """faust hands headers over as the driver got them: a list of pairs, or a mapping."""
    if raw is None:
        return ()
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    return tuple((str(name), bytes(value)) for name, value in pairs)


def decode_message(message: Message) -> BlackboardEvent:
    """The :class:`BlackboardEvent` of one message of the events topic.

    Uses the log's own record codec and the schema registry (with upcasting), so a faust app
    reads exactly what the projector reads. Raises ``UndecodableRecord`` for a record that is not
    a Blackboard event, ``UnknownEventType`` for a type or schema version this build does not know,
    and ``msgspec.DecodeError``/``ValidationError`` for a malformed payload.
    """
    timestamp = message.timestamp
    record = StoredRecord(
        topic=message.topic, partition=message.partition, offset=message.offset, key=message.key,
        value=message.value, headers=_headers(message.headers),
        timestamp_ms=int(timestamp * 1000) if timestamp is not None else 0)
    recorded = from_record(record)
    env = recorded.envelope
    payload = decode_event(env.type, env.schema_version, env.payload)
    return BlackboardEvent(envelope=env, payload=payload, partition=recorded.partition, offset=recorded.offset)


class BlackboardSchema(faust.Schema[str | None, BlackboardEvent]):
    """The faust schema of the events topic: keys as text (the partition key), values as :class:`BlackboardEvent`.

    Note: a record that cannot be decoded becomes faust's ``ValueDecodeError``; what happens next
    is the topic's choice (see :class:`EventsTopic`).
    """

    def __init__(self) -> None:
        super().__init__(key_type=str, value_type=None, key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: AppT, message: Message, *, loads: Any = None, serializer: Any = None) -> str | None:
        return message.key.decode("utf-8", errors="replace") if message.key is not None else None

    def loads_value(self, app: AppT, message: Message, *, loads: Any = None,
                    serializer: Any = None) -> BlackboardEvent:
        try:
            return decode_message(message)
        except (UndecodableRecord, UnknownEventType, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueDecodeError(f"{message.topic}[{message.partition}]@{message.offset}: {exc}") from exc

    def dumps_value(self, app: AppT, value: Any, *, serializer: Any = None, headers: Any) -> Any:
        # Events are appended by the deciders alone, after checking the command against state.
        raise TypeError("the events topic is written only by Blackboard: send a command (CommandClient) instead")


OnUndecodable = Literal["skip", "raise"]


class EventsTopic(faust.Topic):
    """The events topic as a faust topic: never created or configured by faust, and tolerant of the unknown.

    With ``on_undecodable="skip"`` (the default) a record this build cannot decode (a newer event
    type, a newer schema version, a foreign record) is logged with its position and passed over,
    as the projector sets such records aside and goes on; faust has acknowledged it already.
    With ``"raise"`` the error reaches the agent, which stops (its supervisor restarts it).
    """

    def __init__(self, *args: Any, on_undecodable: OnUndecodable = "skip", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_undecodable = on_undecodable

    def _clone_args(self) -> dict[str, Any]:
        # faust clones a topic for each agent actor; the clone must keep the policy.
        args: dict[str, Any] = super()._clone_args()
        return {**args, "on_undecodable": self.on_undecodable}

    async def on_value_decode_error(self, exc: Exception, message: Message) -> None:
        if isinstance(exc.__cause__, PassedOver):
            # An ownership marker or a fenced write: no event, for every reader alike, whatever the policy.
            return
        if self.on_undecodable == "raise":
            await super().on_value_decode_error(exc, message)
            return
        log.error("skipped an event this build cannot decode: %s", exc)


class HasEventsTopic(Protocol):
    """Anything that names the events topic, as Blackboard's ``blackboard.config.Settings`` does."""

    @property
    def events_topic(self) -> str: ...


def events_topic(app: faust.App, settings_or_name: HasEventsTopic | str, *,
                 on_undecodable: OnUndecodable = "skip") -> EventsTopic:
    """The handle of Blackboard's events topic for ``app``: iterate it in an agent to get :class:`BlackboardEvent`.

    ``settings_or_name`` is Blackboard's :class:`~blackboard.config.Settings` (the topic is
    ``<topic_prefix>events``) or the topic's full name.

    Note: the topic belongs to Blackboard; faust never creates it nor changes its partitions
    (``internal=False``), so the app must start after Blackboard created it.
    """
    name = settings_or_name if isinstance(settings_or_name, str) else settings_or_name.events_topic
    return EventsTopic(app, topics=[name], schema=BlackboardSchema(), internal=False,
                       on_undecodable=on_undecodable)


# ---------------------------------------------------------------------------------------------- codec


class _Wire(msgspec.Struct, frozen=True, kw_only=True):
    """A :class:`BlackboardEvent` as one JSON value: the payload as written, beside the envelope."""

    envelope: Envelope
    payload: msgspec.Raw
    partition: int
    offset: int


class BlackboardCodec(codecs.Codec):
    """faust codec ``"blackboard"``: a :class:`BlackboardEvent` ↔ one self-contained JSON value.

    For the app's own topics, channels and tables (re-keying events, fanning them out). The payload
    travels as written (its schema version in the envelope) and is decoded again through the
    registry, so a reader built later upcasts it like any other.
    """

    def _dumps(self, obj: Any) -> bytes:
        if not isinstance(obj, BlackboardEvent):
            raise TypeError(f"the {CODEC_NAME!r} codec encodes BlackboardEvent, not {type(obj).__name__}")
        env = msgspec.structs.replace(obj.envelope, payload=b"")
        wire = _Wire(envelope=env, payload=msgspec.Raw(obj.envelope.payload), partition=obj.partition,
                     offset=obj.offset)
        return msgspec.json.encode(wire)

    def _loads(self, s: bytes) -> BlackboardEvent:
        wire = msgspec.json.decode(s, type=_Wire)
        env = msgspec.structs.replace(wire.envelope, payload=bytes(wire.payload))
        payload = decode_event(env.type, env.schema_version, env.payload)
        return BlackboardEvent(envelope=env, payload=payload, partition=wire.partition, offset=wire.offset)


codecs.register(CODEC_NAME, BlackboardCodec())


# ---------------------------------------------------------------------------------------------- commands


def command_id_for(event: BlackboardEvent, prefix: str = "faust") -> str:
    """``<prefix>:<event_id>``: the one command id a reaction to ``event`` ever gets.

    A worker that crashes before faust committed its offset sees the event again and sends the
    same command again; the deciders answer the first outcome and append nothing. Give each kind
    of reaction to one event its own ``prefix`` when an agent sends more than one command per event.
    """
    return f"{prefix}:{event.event_id}"


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of a command: ``accepted`` (with the new version and position) or ``rejected`` by a rule.

    ``replayed`` says the command id had been decided before and this is its first outcome again.
    """

    outcome: Literal["accepted", "rejected"]
    command_id: str
    replayed: bool = False
    stream: str | None = None
    version: int | None = None
    position: str | None = None
    code: str | None = None
    message: str | None = None


class CommandFailed(Exception):
    """The API did not decide the command: bad input, bad credentials, or unavailable past the retries.

    ``retriable`` says whether sending the same command (same id) later may succeed.
    """

    def __init__(self, message: str, *, status: int | None, code: str, retriable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retriable = retriable


class _Answer(msgspec.Struct, frozen=True):
    outcome: Literal["accepted", "rejected"]
    command_id: str
    stream: str | None = None
    version: int | None = None
    position: str | None = None
    code: str | None = None
    message: str | None = None


class _Error(msgspec.Struct, frozen=True):
    code: str = "unknown"
    message: str = ""


class CommandClient:
    """Sends commands to a Blackboard HTTP API (``POST /v1/commands``), retrying what a retry can fix.

    A transport error or a 503 (log unavailable, partition changing owner) is retried with the
    same command id, which is safe: a command decided before answers its first outcome.
    ``retries=None`` retries for ever (waits grow to ``max_backoff``): right for an agent, which
    must not pass over an event whose command was never decided.

    Note: a rejection (409: a rule refused it) is an answer, not an error; it is returned.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 10.0,
                 retries: int | None = 5, backoff: float = 0.2, max_backoff: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff

    async def __aenter__(self) -> CommandClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, type_: str, stream: str, payload: Mapping[str, Any] | msgspec.Struct, *,
                   command_id: str, correlation_id: str | None = None,
                   causation_id: str | None = None) -> CommandResult:
        """Send one command under ``command_id`` (required: a generated one would defeat the deduplication)."""
        body: dict[str, Any] = {"type": type_, "stream": stream, "command_id": command_id,
                                "payload": msgspec.to_builtins(payload)}
        body |= {k: v for k, v in (("correlation_id", correlation_id), ("causation_id", causation_id)) if v}
        content = msgspec.json.encode(body)
        attempt = 0
        while True:
            try:
                response = await self._http.post("/v1/commands", content=content,
                                                  headers={"Content-Type": "application/json"})
            except httpx.TransportError as exc:
                failure = CommandFailed(f"{type_} {stream}: {exc!r}", status=None, code="unreachable", retriable=True)
            else:
                if response.status_code in (200, 409):
                    return _result(response)
                failure = _failure(type_, stream, response)
            if not failure.retriable or attempt == self._retries:
                raise failure
            await asyncio.sleep(min(self._backoff * 2 ** min(attempt, 30), self._max_backoff))
            attempt += 1

    async def react(self, event: BlackboardEvent, type_: str, stream: str,
                    payload: Mapping[str, Any] | msgspec.Struct, *, prefix: str = "faust") -> CommandResult:
        """Send the command that reacts to ``event``: id from :func:`command_id_for`, same correlation,
        caused by the event (so ``history`` links the two)."""
        return await self.send(type_, stream, payload, command_id=command_id_for(event, prefix),
                               correlation_id=event.correlation_id, causation_id=event.event_id)


def _result(response: httpx.Response) -> CommandResult:
    answer = msgspec.json.decode(response.content, type=_Answer)
    replayed = response.headers.get("idempotent-replayed") == "true"
    return CommandResult(outcome=answer.outcome, command_id=answer.command_id, replayed=replayed,
                         stream=answer.stream, version=answer.version, position=answer.position,
                         code=answer.code, message=answer.message)


def _failure(type_: str, stream: str, response: httpx.Response) -> CommandFailed:
    try:
        error = msgspec.json.decode(response.content, type=_Error)
    except msgspec.DecodeError:
        error = _Error(message=response.text[:200])
    retriable = response.status_code in (429, 502, 503, 504)
    return CommandFailed(f"{type_} {stream}: HTTP {response.status_code} {error.code}: {error.message}",
                         status=response.status_code, code=error.code, retriable=retriable)
