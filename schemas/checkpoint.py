"""Checkpoint commands and events: opaque bytes a task or workflow thread saves, reads back and restores.

A checkpoint may be several MB, but no record of the log may pass the broker's message limit
(1 MiB by Kafka's default). So its bytes are compressed (``encoding``), and the event carries them
inline only when the stored form is small; larger ones go to a content-addressed blob store and
the event carries the reference (the ``sha256`` of the checkpoint's bytes, with ``blob: true``):
the claim-check pattern. Either way ``sha256`` and ``size`` describe the bytes as the client gave
them, so a reader verifies what it hands back.

Note: ``encode`` and ``decode`` are the one definition of the stored form, shared by the upload
route, the decider's check of inline bytes, the blob store and the read routes.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

#: Largest stored (compressed) form carried inline in an event. Base64 in JSON makes it 4/3 larger:
#: 512 KiB inline is about 683 KiB of event value, well under a 1 MiB record with metadata and headers.
MAX_INLINE_BYTES = 512 * 1024
#: Largest ``metadata`` object, as compact JSON.
MAX_METADATA_BYTES = 64 * 1024

Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}(?!\n)$",
                                     description="sha256 of the checkpoint's bytes: 64 lowercase hex digits")]
ByteCount = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
#: A checkpoint's number in its thread: 1, 2, 3… in the order they were saved.
Seq = Annotated[int, msgspec.Meta(ge=1, le=2**53)]
Encoding = Literal["zlib", "identity"]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
InlineBytes = Annotated[bytes, msgspec.Meta(max_length=MAX_INLINE_BYTES)]


class SaveCheckpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """``checkpoint.save``: append a checkpoint to the thread.

    Exactly one of ``inline`` (the stored form, ``stored_size`` bytes in ``encoding``) and
    ``blob: true`` (the stored form is in the blob store under ``sha256``). ``parent_seq`` names
    the checkpoint this one continues from, when it is not simply the previous one.
    """

    sha256: Sha256
    size: ByteCount
    encoding: Encoding
    stored_size: ByteCount
    inline: InlineBytes | None = None
    blob: bool = False
    label: Label | None = None
    metadata: dict[str, Any] | None = None
    parent_seq: Seq | None = None


class RestoreCheckpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """``checkpoint.restore``: append a new checkpoint equal to checkpoint ``seq`` (its ``restored_from``)."""

    seq: Seq
    label: Label | None = None


class CheckpointSaved(msgspec.Struct, frozen=True, omit_defaults=True):
    """Checkpoint ``seq`` of the thread was saved, or restored from ``restored_from``.

    Its bytes are in this event (``inline``), in the blob store (``blob``), or, for a restore of an
    inline checkpoint, in the event of checkpoint ``inline_from``: a restore never copies bytes.
    """

    seq: int
    sha256: str
    size: int
    encoding: Encoding
    stored_size: int
    blob: bool = False
    inline: bytes | None = None
    inline_from: int | None = None
    label: str | None = None
    metadata: dict[str, Any] | None = None
    parent_seq: int | None = None
    restored_from: int | None = None


CheckpointCommand = SaveCheckpoint | RestoreCheckpoint
CheckpointEvent = CheckpointSaved


# ── the stored form ─────────────────────────────────────────────────────────────────────


class Encoded(msgspec.Struct, frozen=True):
    """A checkpoint's bytes ready to store: ``data`` is ``size`` bytes with ``sha256`` in ``encoding``."""

    sha256: str
    size: int
    encoding: Encoding
    data: bytes


class CheckpointCorrupt(ValueError):
    """Stored bytes that do not decode to the size and sha256 they were saved with."""


def encode(raw: bytes, level: int = 6) -> Encoded:
    """``raw`` compressed with zlib, or kept as it is (``identity``) when compressing does not make it smaller."""
    packed = zlib.compress(raw, level)
    digest = hashlib.sha256(raw).hexdigest()
    if len(packed) < len(raw):
        return Encoded(digest, len(raw), "zlib", packed)
    return Encoded(digest, len(raw), "identity", raw)


def decode(data: bytes, encoding: str, size: int, sha256: str) -> bytes:
    """The checkpoint's bytes from their stored form; ``CheckpointCorrupt`` unless they have ``size`` and ``sha256``.

    Note: decompression stops one byte past ``size``, so a stored form that would inflate far beyond
    what was declared (a zlib bomb) costs no more memory than the declared checkpoint.
    """
    if encoding == "zlib":
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(data, size + 1)
        except zlib.error as exc:
            raise CheckpointCorrupt(f"the stored bytes are not zlib data: {exc}") from None
        if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
            raise CheckpointCorrupt(f"the zlib data does not end after {size} bytes")
    elif encoding == "identity":
        raw = data
    else:
        raise CheckpointCorrupt(f"unknown encoding {encoding!r}")
    if len(raw) != size:
        raise CheckpointCorrupt(f"decoded {len(raw)} bytes, the checkpoint has {size}")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise CheckpointCorrupt(f"decoded bytes have sha256 {digest}, the checkpoint has {sha256}")
    return raw


# ── the HTTP API's shapes ───────────────────────────────────────────────────────────────


class RestoreRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/checkpoints/{thread_id}/restore`` body."""

    seq: Seq
    label: Label | None = None


class CheckpointAccepted(msgspec.Struct, frozen=True, tag="accepted", tag_field="outcome"):
    """A saved (or restored) checkpoint: what ``POST /v1/commands`` answers, with the checkpoint's own fields.

    ``position`` is the consistency token: pass it to a read to read this checkpoint back.
    """

    command_id: str
    stream: str
    version: int
    position: str
    seq: int
    sha256: str
    size: int
    stored_size: int
    encoding: Encoding
    blob: bool
    restored_from: int | None = None


class CheckpointEntryView(msgspec.Struct, frozen=True):
    """One checkpoint of a thread's history (its bytes are read with ``GET …/{seq}``)."""

    seq: int
    sha256: str
    size: int
    stored_size: int
    encoding: str
    blob: bool
    label: str | None
    metadata: dict[str, Any] | None
    parent_seq: int | None
    restored_from: int | None
    command_id: str
    created_at: datetime
    created_by: str
