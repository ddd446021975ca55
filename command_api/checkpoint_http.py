"""``PUT /v1/checkpoints/{thread_id}`` (raw bytes in) and ``POST …/restore``: checkpoint commands over HTTP.

The upload route does what a client of ``POST /v1/commands`` could not do within a 1 MiB body and a
1 MiB log record: it takes the raw bytes (up to ``checkpoint_max_bytes``), compresses them, and puts
them inline in the command when the stored form is at most ``checkpoint_inline_bytes``, else into the
blob store first (claim check), the command then naming the blob by sha256.

Note: the blob is written before the command is submitted, so no event ever names a missing blob;
a failed append leaves an orphan blob, which is harmless (see ``blackboard.events.postgres.blobs``).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import structlog
from litestar import Request, Response, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter
from opentelemetry import context as otel_context

from blackboard.command_api.http_errors import require_write
from blackboard.command_api.service import CommandService, submit
from blackboard.domain.decoding import BadInput, convert, json_body
from blackboard.events.postgres.blobs import BlobStore, StoredBlob
from blackboard.schemas.api import Accepted, CommandRequest, ErrorBody, Rejected
from blackboard.schemas.auth import WRITES, Principal
from blackboard.schemas.checkpoint import (
    MAX_METADATA_BYTES,
    CheckpointAccepted,
    Encoded,
    RestoreCheckpoint,
    RestoreRequest,
    SaveCheckpoint,
    encode,
)
from blackboard.schemas.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

JSON = "application/json"
OCTETS = "application/octet-stream"
METADATA_HEADER = "x-checkpoint-metadata"

log = structlog.get_logger(__name__)

ThreadId = Annotated[str, PathParameter(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$",
                                        description="a task id or a workflow thread id")]
LabelParam = Annotated[str | None, QueryParameter(min_length=1, max_length=200, description="a name for it")]
ParentSeq = Annotated[int | None, QueryParameter(ge=1, le=2**53, description="the checkpoint it continues from")]
_COMMAND_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass(frozen=True, slots=True)
class CheckpointLimits:
    """What the upload route needs of the configuration; the app's state holds it as ``checkpoint_limits``."""

    #: Largest checkpoint accepted, in bytes as sent.
    max_bytes: int
    #: Largest stored (compressed) form put inline in the command; a larger one goes to the blob store.
    inline_bytes: int
    #: The PostgreSQL schema of the blob store.
    blob_schema: str


_ERRORS = {
    401: ResponseSpec(ErrorBody, description="missing_credentials / invalid_credentials"),
    403: ResponseSpec(ErrorBody, description="insufficient_scope: blackboard:write:checkpoint"),
    409: ResponseSpec(Rejected, description="rejected by a rule: unknown_checkpoint, not_found"),
    422: ResponseSpec(ErrorBody, description="invalid_metadata, metadata_too_large, invalid_idempotency_key, "
                                             "idempotency_key_reused, invalid_request"),
    503: ResponseSpec(ErrorBody, description="log_unavailable / not_owner: retry with the same Idempotency-Key"),
}


@put("/v1/checkpoints/{thread_id:str}", status_code=200, summary="Save a checkpoint (raw bytes)",
     tags=["checkpoints"], request_max_body_size=None, opt={WRITES: True},
     responses={200: ResponseSpec(CheckpointAccepted, description="saved: its seq and the position token"),
                413: ResponseSpec(ErrorBody, description="checkpoint_too_large: nothing was written"),
                415: ResponseSpec(ErrorBody, description="unsupported_media_type"), **_ERRORS})
async def put_checkpoint(request: Request[None, None, State], principal: NamedDependency[Principal],
                         thread_id: ThreadId, label: LabelParam = None, parent_seq: ParentSeq = None
                         ) -> Response[bytes]:
    """Append the body (``application/octet-stream``, up to ``checkpoint_max_bytes``) as the thread's next checkpoint.

    Optional: ``X-Checkpoint-Metadata`` (a JSON object, at most 64 KiB), ``Idempotency-Key`` (the
    command id: a retry with the same key and bytes answers the first outcome and appends nothing).
    """
    require_write(principal, "checkpoint", "checkpoint.save")
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != OCTETS:
        raise UnsupportedMediaType(f"Content-Type must be {OCTETS}, got {media_type or 'nothing'!r}")
    metadata = _metadata(request.headers.get(METADATA_HEADER))
    command_id = _command_id(request)
    limits: CheckpointLimits = request.app.state.checkpoint_limits
    raw = await _read_body(request, limits.max_bytes)
    encoded = await asyncio.to_thread(encode, raw)
    blob = len(encoded.data) > limits.inline_bytes
    if blob:
        stored = StoredBlob(encoded.sha256, encoded.size, encoded.encoding, encoded.data)
        await BlobStore(request.app.state.runtime.pool, limits.blob_schema).put(stored)
    payload = _save_command(encoded, blob, label, metadata, parent_seq)
    return await _submit(request, principal, "checkpoint.save", thread_id, payload, command_id)


@post("/v1/checkpoints/{thread_id:str}/restore", status_code=200, summary="Restore an earlier checkpoint",
      tags=["checkpoints"], responses={200: ResponseSpec(CheckpointAccepted, description="restored as a new seq"),
                                       **_ERRORS}, opt={WRITES: True})
async def restore_checkpoint(request: Request[None, None, State], principal: NamedDependency[Principal],
                             thread_id: ThreadId) -> Response[bytes]:
    """Append a new checkpoint equal to checkpoint ``seq`` (body ``{"seq": 3, "label": "…"}``); it becomes the latest.

    409 ``not_found`` when the thread has no checkpoint, ``unknown_checkpoint`` when it has no ``seq``.
    """
    require_write(principal, "checkpoint", "checkpoint.restore")
    command_id = _command_id(request)
    value = json_body(request.headers.get("content-type"), await request.body())
    try:
        body = convert(value, RestoreRequest, "$")
    except BadInput as exc:
        raise InvalidRequest("the body is not a restore request", errors=exc.errors) from None
    return await _submit(request, principal, "checkpoint.restore", thread_id,
                         RestoreCheckpoint(body.seq, body.label), command_id)


def _metadata(header: str | None) -> dict[str, Any] | None:
    """The ``X-Checkpoint-Metadata`` JSON object; 422 ``invalid_metadata`` / ``metadata_too_large`` otherwise."""
    if header is None:
        return None
    if len(header) > MAX_METADATA_BYTES:
        raise InvalidRequest(f"{METADATA_HEADER} is {len(header)} bytes, over the limit of {MAX_METADATA_BYTES}",
                             code="metadata_too_large")
    try:
        value = msgspec.json.decode(header, type=dict[str, Any])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidRequest(f"{METADATA_HEADER} is not a JSON object: {exc}", code="invalid_metadata") from None
    if b"\\u0000" in msgspec.json.encode(value):  # PostgreSQL's jsonb cannot store NUL
        raise InvalidRequest(f"{METADATA_HEADER} contains NUL (U+0000)", code="invalid_metadata")
    return value


def _command_id(request: Request[Any, Any, State]) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        return uuid.uuid4().hex
    if not _COMMAND_ID.fullmatch(key):
        raise InvalidRequest(f"Idempotency-Key {key[:64]!r} must be 1-128 letters, digits, '.', '_', ':' or '-'",
                             code="invalid_idempotency_key")
    return key


async def _read_body(request: Request[Any, Any, State], limit: int) -> bytes:
    """The body, refused with 413 ``checkpoint_too_large`` as soon as it passes ``limit`` (nothing is written)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(received, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the checkpoint is {size} bytes or more, over the limit of {limit}",
                           code="checkpoint_too_large")


def _save_command(encoded: Encoded, blob: bool, label: str | None, metadata: dict[str, Any] | None,
                  parent_seq: int | None) -> SaveCheckpoint:
    return SaveCheckpoint(encoded.sha256, encoded.size, encoded.encoding, len(encoded.data),
                          inline=None if blob else encoded.data, blob=blob, label=label, metadata=metadata,
                          parent_seq=parent_seq)


async def _submit(request: Request[None, None, State], principal: Principal, command_type: str, thread_id: str,
                  payload: SaveCheckpoint | RestoreCheckpoint, command_id: str) -> Response[bytes]:
    """Hand the command to its partition's owner, as ``POST /v1/commands`` does, and answer the outcome.

    Note: the fingerprint is the one ``POST /v1/commands`` computes for the same payload (inline
    bytes as base64, fields at their defaults left out), so a retry through either route with the
    same id is recognised as the same command. The thread and the id are the caller's tenant's: the
    submission scopes them (``schemas/tenancy.py``), and the answer shows them as the caller named them.
    """
    stream = f"checkpoint:{thread_id}"
    command = CommandRequest(command_type, stream, msgspec.to_builtins(payload), command_id=command_id)
    service: CommandService = request.app.state.runtime.commands
    structlog.contextvars.bind_contextvars(command_id=command_id, stream=stream, actor=principal.name,
                                           tenant=principal.tenant)
    outcome, replayed = await submit(service, command, payload, actor=principal.name, tenant=principal.tenant,
                                     trace=otel_context.get_current())
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    if isinstance(outcome, Accepted) and outcome.events:
        return Response(msgspec.json.encode(_accepted(outcome)), media_type=JSON, headers=headers)
    return Response(msgspec.json.encode(outcome), status_code=409 if isinstance(outcome, Rejected) else 200,
                    media_type=JSON, headers=headers)


def _accepted(outcome: Accepted) -> CheckpointAccepted:
    """The answer without the event's inline bytes: the client has them, and they may be 256 KiB of base64."""
    saved = outcome.events[-1].payload
    return CheckpointAccepted(
        outcome.command_id, outcome.stream, outcome.version, outcome.position, seq=saved["seq"],
        sha256=saved["sha256"], size=saved["size"], stored_size=saved["stored_size"], encoding=saved["encoding"],
        blob=saved.get("blob", False), restored_from=saved.get("restored_from"))


ROUTES = [put_checkpoint, restore_checkpoint]
