"""The envelope every event travels in, and the consistency token built from log positions."""

from __future__ import annotations

from datetime import datetime

import msgspec


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """One event as the log stores it: metadata plus the encoded payload.

    In Kafka the key is ``partition_key``, the metadata fields travel as headers and the value
    is ``payload`` (msgspec JSON), so ``kcat`` and Redpanda Console can read it.

    Note: ``actor`` is always the authenticated principal of the command, never a value the
    caller typed into a request body.
    """

    event_id: str
    stream: str
    stream_version: int
    type: str
    schema_version: int
    occurred_at: datetime
    command_id: str
    correlation_id: str
    causation_id: str
    actor: str
    writer_epoch: int
    partition_key: str
    payload: bytes
    command_hash: str = ""
    #: W3C trace context of the span that decided the command; ``None`` in events written without one.
    traceparent: str | None = None
    tracestate: str | None = None
    #: The agent run that sent the command, its model and prompt hash, when it said.
    agent_run_id: str | None = None
    agent_model: str | None = None
    prompt_hash: str | None = None
    #: The tenant of the principal that sent the command; ``None``: the default tenant (events written before
    #: tenants, and the process managers' own commands).
    tenant: str | None = None


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An envelope together with where the log put it."""

    envelope: Envelope
    partition: int
    offset: int


def stream_partition_key(stream: str) -> str:
    """The partition key of a stream: the id after the category (``project:p-1`` → ``p-1``).

    Note: every stream of one project shares the project's key, so one command may touch a
    project, its shots and its budget atomically.
    """
    category, sep, ident = stream.partition(":")
    if not sep or not category or not ident:
        raise ValueError(f"stream {stream!r} is not of the form '<category>:<id>'")
    return ident


def encode_token(positions: dict[int, int]) -> str:
    """A consistency token naming, per partition, the offset a read must have seen.

    Format: ``"<partition>:<offset>"`` pairs joined by commas, e.g. ``"3:1042"``.
    """
    if len(positions) == 1:  # the token of every command's answer: one partition
        for p, o in positions.items():
            return f"{p}:{o}"
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def decode_token(token: str) -> dict[int, int]:
    """Parse a token made by :func:`encode_token`; raise ``ValueError`` naming the bad part."""
    positions: dict[int, int] = {}
    if len(token) > 4096:
        raise ValueError("consistency token is longer than 4096 characters")
    for part in token.split(","):
        p, sep, o = part.partition(":")
        if not sep or not p.isdigit() or not o.isdigit() or len(p) > 6 or len(o) > 19:
            raise ValueError(f"consistency token part {part!r} is not '<partition>:<offset>'")
        positions[int(p)] = max(positions.get(int(p), -1), int(o))
    return positions
