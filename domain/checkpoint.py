"""The checkpoint decider: stream ``checkpoint:<thread_id>``; checkpoints numbered 1, 2, 3… never rewritten.

A restore appends a new checkpoint equal to an earlier one, so the thread's history stays a plain
list and "the latest" is always the last entry. The state holds each checkpoint's small reference
(where its bytes are and how to check them), never the bytes: the read model and the blob store
hold those.
"""

from __future__ import annotations

import msgspec

from blackboard.domain.decider import Context, Rejection
from blackboard.schemas.checkpoint import (
    MAX_METADATA_BYTES,
    CheckpointCommand,
    CheckpointCorrupt,
    CheckpointEvent,
    CheckpointSaved,
    Encoding,
    RestoreCheckpoint,
    SaveCheckpoint,
    decode,
)

CATEGORY = "checkpoint"


class CheckpointRef(msgspec.Struct, frozen=True):
    """Where one checkpoint's bytes are: the blob store (``blob``) or the entry of checkpoint ``inline_from``."""

    sha256: str
    size: int
    encoding: Encoding
    stored_size: int
    blob: bool
    inline_from: int | None
    label: str | None = None


class Thread(msgspec.Struct, frozen=True):
    """Every checkpoint of the thread: ``refs[seq - 1]``; the latest is the last."""

    refs: tuple[CheckpointRef, ...] = ()


#: No checkpoint yet: the first one is number 1.
initial_state = Thread()


def evolve(state: Thread, event: CheckpointEvent) -> Thread:
    """The state after ``event``. Total and trusting: an appended event happened."""
    match event:
        case CheckpointSaved():
            inline_from = event.inline_from if event.inline_from is not None else (
                event.seq if event.inline is not None else None)
            ref = CheckpointRef(event.sha256, event.size, event.encoding, event.stored_size, event.blob,
                                inline_from, event.label)
            return Thread((*state.refs, ref))
    return state


def decide(state: Thread, command: CheckpointCommand, ctx: Context) -> list[CheckpointEvent] | Rejection:
    """The events ``command`` causes, or the rule that refuses it."""
    match command:
        case SaveCheckpoint():
            return _save(state, command, ctx)
        case RestoreCheckpoint(seq, label):
            return _restore(state, seq, label, ctx)


def _save(state: Thread, cmd: SaveCheckpoint, ctx: Context) -> list[CheckpointEvent] | Rejection:
    latest = len(state.refs)
    if not ctx.require("exactly one of inline and blob", (cmd.inline is None) == cmd.blob):
        return Rejection("invalid_checkpoint", "a checkpoint carries its bytes inline or names a blob, "
                         f"exactly one of the two (inline: {cmd.inline is not None}, blob: {cmd.blob})")
    problem = _inline_problem(cmd) if cmd.inline is not None else None
    if not ctx.require("inline bytes decode to the declared size and sha256", problem is None):
        return Rejection("checkpoint_mismatch", f"the inline bytes do not match the checkpoint: {problem}",
                         {"sha256": cmd.sha256, "size": cmd.size})
    if not ctx.require("parent_seq names an existing checkpoint", cmd.parent_seq is None or cmd.parent_seq <= latest):
        return _unknown(cmd.parent_seq or 0, latest)
    metadata_size = len(msgspec.json.encode(cmd.metadata)) if cmd.metadata is not None else 0
    if not ctx.require("metadata is at most 64 KiB of JSON", metadata_size <= MAX_METADATA_BYTES):
        return Rejection("metadata_too_large", f"metadata is {metadata_size} bytes of JSON, over the limit of "
                         f"{MAX_METADATA_BYTES}", {"size": metadata_size, "limit": MAX_METADATA_BYTES})
    return [CheckpointSaved(latest + 1, cmd.sha256, cmd.size, cmd.encoding, cmd.stored_size, blob=cmd.blob,
                            inline=cmd.inline, label=cmd.label, metadata=cmd.metadata, parent_seq=cmd.parent_seq)]


def _inline_problem(cmd: SaveCheckpoint) -> str | None:
    """Why the inline bytes are not the checkpoint the command describes; ``None`` when they are.

    Note: pure (decompress and hash, no I/O), so the decider keeps bad bytes out of the log even
    for a command sent to ``POST /v1/commands`` rather than through the upload route.
    """
    assert cmd.inline is not None
    if len(cmd.inline) != cmd.stored_size:
        return f"inline holds {len(cmd.inline)} bytes, stored_size says {cmd.stored_size}"
    try:
        decode(cmd.inline, cmd.encoding, cmd.size, cmd.sha256)
    except CheckpointCorrupt as exc:
        return str(exc)
    return None


def _restore(state: Thread, seq: int, label: str | None, ctx: Context) -> list[CheckpointEvent] | Rejection:
    latest = len(state.refs)
    if not ctx.require("the thread has a checkpoint", latest > 0):
        return Rejection("not_found", "the thread has no checkpoint to restore")
    if not ctx.require("seq names an existing checkpoint", seq <= latest):
        return _unknown(seq, latest)
    ref = state.refs[seq - 1]
    return [CheckpointSaved(latest + 1, ref.sha256, ref.size, ref.encoding, ref.stored_size,
                            blob=ref.blob, inline_from=ref.inline_from, label=label, parent_seq=seq,
                            restored_from=seq)]


def _unknown(seq: int, latest: int) -> Rejection:
    known = f"its checkpoints are 1..{latest}" if latest else "it has none"
    return Rejection("unknown_checkpoint", f"the thread has no checkpoint {seq}; {known}",
                     {"seq": seq, "latest_seq": latest})
