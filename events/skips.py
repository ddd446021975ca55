"""An operator's skip of a record no fold can apply: a decision recorded in the log, after that record.

A record that does not decode or does not fit its stream (a newer schema, garbage written by a
foreign producer) stops its stream: the projector sets it aside as a dead letter and holds the
stream's later records behind it, and the command side refuses to decide on the stream. When an
operator gives up on it, the decision is appended to the same partition as a skip record naming
the record's offset, its stream and version, who decided, why and when. Every fold that meets the
skip applies it the same way, from the record alone: the stream takes the skipped record's
version when it is exactly one behind (its content does not change), and the records held behind
it are folded again. So a rebuild, a verify and a restored owner agree with the live read models,
and the stream takes commands again.

Note: every other reader passes over a skip record (``codec.passed_over``), as over an ownership marker.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from blackboard.events.codec import (
    CONTENT_TYPE,
    SKIP_MARKER,
    SKIP_MARKER_TYPE,
    UndecodableRecord,
    from_record,
    stream_header,
)
from blackboard.events.log import Record, StoredRecord


class Skip(msgspec.Struct, frozen=True, kw_only=True):
    """An operator gave up on the record at ``offset`` of this partition.

    ``stream`` and ``stream_version`` are what that record's headers said (``None`` when they did
    not say); ``operator`` who decided, ``reason`` why, ``skipped_at`` when.
    """

    offset: int
    stream: str | None
    stream_version: int | None
    operator: str
    reason: str
    skipped_at: datetime


def skip_of_record(rec: StoredRecord, *, operator: str, reason: str, at: datetime) -> Skip:
    """The skip of ``rec``, with the stream and version its headers tell, as every fold reads them."""
    try:
        version: int | None = from_record(rec).envelope.stream_version
    except UndecodableRecord:
        version = None  # no envelope: no fold can move the stream's version for it
    return Skip(offset=rec.offset, stream=stream_header(rec), stream_version=version, operator=operator,
                reason=reason, skipped_at=at)


def skip_record(skip: Skip) -> Record:
    """The record that carries ``skip`` (appended to the skipped record's partition)."""
    return Record(key=None, value=msgspec.json.encode(skip),
                  headers=(("type", SKIP_MARKER.encode()), ("content-type", CONTENT_TYPE)))


def skip_of(rec: StoredRecord) -> Skip | None:
    """The skip ``rec`` carries, or ``None`` (not a skip record, or one that does not decode)."""
    if not any(name == "type" and value == SKIP_MARKER_TYPE for name, value in rec.headers):
        return None
    try:
        skip = msgspec.json.decode(rec.value or b"", type=Skip)
    except msgspec.DecodeError:
        return None
    return skip if skip.offset < rec.offset else None  # a skip can only name a record before it


def takes_version(current: int | None, skip: Skip) -> bool:
    """Whether a stream at version ``current`` (``None``: it does not exist) takes the skipped record's version.

    Note: only a stream exactly one behind does: the skipped record was then its next version, and
    the versions after it follow on. A stream that does not exist is at version 0, so the skip of
    its first record leaves it at version 1 with its decider's initial state (the event that opens
    it may then be version 2); the projector keeps that version of a stream without a row in the
    skipped dead letters (``projector.fold.BatchFold.floors``).
    """
    return skip.stream_version is not None and (current or 0) == skip.stream_version - 1
