"""Checkpoint reads: the latest or any earlier checkpoint's bytes, and a thread's history.

Bytes come from the checkpoint's entry in the read model (stored inline in its event) or from the
blob store (claim check); either way they are decompressed and checked against the sha256 and size
the checkpoint was saved with before a byte is answered. A mismatch is the store's fault, never
the caller's: 500 ``checkpoint_corrupt``, logged.

Each read waits for the consistency token (``consistent_with`` or the ``Blackboard-Consistency``
header) like every other read: pass the ``position`` a save answered to read that save back.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import asyncpg
import structlog
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from blackboard.events.postgres.blobs import BlobStore
from blackboard.query_api.http import Token, consistent_reads
from blackboard.query_api.reads import MAX_PAGE
from blackboard.query_api.tenant_reads import unconfined
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.auth import Principal
from blackboard.schemas.checkpoint import CheckpointCorrupt, CheckpointEntryView, decode
from blackboard.schemas.errors import ApiError, NotFound
from blackboard.schemas.tenancy import scope_id
from blackboard.schemas.views import Page

JSON = "application/json"
OCTETS = "application/octet-stream"

log = structlog.get_logger(__name__)

ThreadId = Annotated[str, PathParameter(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$",
                                        description="a task id or a workflow thread id")]
SeqParam = Annotated[int, PathParameter(ge=1, le=2**53, description="the checkpoint's number in its thread")]
AfterSeq = Annotated[int, QueryParameter(ge=0, le=2**53, description="the last seq seen (0: from the first)")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="entries per page")]

_BYTES = ResponseSpec(bytes, media_type=OCTETS,
                      description="the checkpoint's bytes; headers X-Checkpoint-Seq, X-Checkpoint-Sha256, ETag")
_MISSING = {404: ResponseSpec(ErrorBody, description="checkpoint_not_found (no such thread), unknown_checkpoint"),
            500: ResponseSpec(ErrorBody, description="checkpoint_corrupt: the stored bytes fail their sha256")}

_ENTRY = "SELECT * FROM checkpoint_entries WHERE thread_id = $1"
_LATEST = _ENTRY + " ORDER BY seq DESC LIMIT 1"
_AT = _ENTRY + " AND seq = $2"
_INLINE = "SELECT inline FROM checkpoint_entries WHERE thread_id = $1 AND seq = $2"
_EXISTS = "SELECT 1 FROM checkpoint_entries WHERE thread_id = $1 LIMIT 1"
_HISTORY = _ENTRY + " AND seq > $2 ORDER BY seq LIMIT $3"


class CheckpointCorruptError(ApiError):
    """The stored bytes do not match the checkpoint: a damaged store (500), not a bad request."""

    status, code = 500, "checkpoint_corrupt"


@get("/v1/checkpoints/{thread_id:str}", summary="The latest checkpoint's bytes", tags=["checkpoints"],
     media_type=OCTETS, responses={200: _BYTES, **_MISSING})
async def get_latest(request: Request[None, None, State], principal: NamedDependency[Principal],
                     thread_id: ThreadId, consistent_with: Token = None) -> Response[bytes]:
    """The bytes of the thread's last checkpoint (a restore is a checkpoint too). ``If-None-Match`` → 304."""
    return await _answer(request, scope_id(principal.tenant, thread_id), None, consistent_with)


@get("/v1/checkpoints/{thread_id:str}/{seq:int}", summary="One checkpoint's bytes", tags=["checkpoints"],
     media_type=OCTETS, responses={200: _BYTES, **_MISSING})
async def get_checkpoint(request: Request[None, None, State], principal: NamedDependency[Principal],
                         thread_id: ThreadId, seq: SeqParam, consistent_with: Token = None) -> Response[bytes]:
    """The bytes of checkpoint ``seq`` of the thread. ``If-None-Match`` → 304."""
    return await _answer(request, scope_id(principal.tenant, thread_id), seq, consistent_with)


@get("/v1/checkpoints/{thread_id:str}/history", summary="A thread's checkpoints (no bytes)", tags=["checkpoints"],
     responses={200: ResponseSpec(Page, description="items are CheckpointEntryView, oldest first"),
                404: ResponseSpec(ErrorBody, description="checkpoint_not_found")})
async def get_history(request: Request[None, None, State], principal: NamedDependency[Principal],
                      thread_id: ThreadId, after_seq: AfterSeq = 0, limit: Limit = 100,
                      consistent_with: Token = None) -> Page:
    """Every checkpoint after ``after_seq``, oldest first: seq, sha256, sizes, label, metadata, who and when.
    ``next_cursor`` is the ``after_seq`` of the next page."""
    reads = await consistent_reads(request, consistent_with)
    stored = scope_id(principal.tenant, thread_id)
    rows = await reads.pool.fetch(_HISTORY, stored, after_seq, limit)
    if not rows and after_seq == 0:
        raise _no_thread(stored)
    items = [entry_view(r) for r in rows]
    return Page(items=items, next_cursor=str(items[-1].seq) if len(items) == limit else None)


def entry_view(row: asyncpg.Record) -> CheckpointEntryView:
    """The history entry of a ``checkpoint_entries`` row (its bytes left out)."""
    return CheckpointEntryView(
        row["seq"], row["sha256"], row["size"], row["stored_size"], row["encoding"], row["blob"], row["label"],
        row["metadata"], row["parent_seq"], row["restored_from"], row["command_id"], row["created_at"],
        row["created_by"])


async def _answer(request: Request[None, None, State], thread_id: str, seq: int | None,
                  consistent_with: str | None) -> Response[bytes]:
    """The checkpoint's bytes; ``thread_id`` is the stored one (the caller's scoped to its tenant), which error
    texts name and the way out shows as the caller named it."""
    reads = await consistent_reads(request, consistent_with)
    entry = await (reads.pool.fetchrow(_LATEST, thread_id) if seq is None
                   else reads.pool.fetchrow(_AT, thread_id, seq))
    if entry is None:
        if seq is None or not await reads.pool.fetchval(_EXISTS, thread_id):
            raise _no_thread(thread_id)
        raise NotFound(f"thread {thread_id!r} has no checkpoint {seq}", code="unknown_checkpoint")
    etag = f'"{entry["sha256"]}"'
    headers = {"X-Checkpoint-Seq": str(entry["seq"]), "X-Checkpoint-Sha256": entry["sha256"], "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    data = await _bytes_of(request, reads.pool, thread_id, entry)
    return Response(data, media_type=OCTETS, headers=headers)


async def _bytes_of(request: Request[Any, Any, State], pool: asyncpg.Pool, thread_id: str,
                    entry: asyncpg.Record) -> bytes:
    """The checkpoint's original bytes, checked against its sha256 and size."""
    where = f"checkpoint {entry['seq']} of thread {thread_id!r}"
    try:
        if entry["blob"]:
            blob_schema: str = request.app.state.runtime.settings.blob_schema
            with unconfined():  # the blob store holds no tenant's rows; the confined entry named the hash
                found = await BlobStore(pool, blob_schema).get(entry["sha256"])
            if found is None:
                raise CheckpointCorrupt(f"blob {entry['sha256']} is missing from the blob store")
            return await asyncio.to_thread(decode, found.data, found.encoding, found.size, found.sha256)
        stored = entry["inline"]
        if stored is None and entry["inline_from"] is not None:
            stored = await pool.fetchval(_INLINE, thread_id, entry["inline_from"])
        if stored is None:
            raise CheckpointCorrupt(f"no stored bytes (inline_from {entry['inline_from']})")
        return await asyncio.to_thread(decode, stored, entry["encoding"], entry["size"], entry["sha256"])
    except CheckpointCorrupt as exc:
        log.error("checkpoint.corrupt", thread_id=thread_id, seq=entry["seq"], sha256=entry["sha256"],
                  reason=str(exc))
        raise CheckpointCorruptError(f"{where} is corrupt in the store: {exc}") from None


def _no_thread(thread_id: str) -> NotFound:
    return NotFound(f"thread {thread_id!r} has no checkpoint", code="checkpoint_not_found")


ROUTES = [get_latest, get_history, get_checkpoint]
