"""What a partition owner holds in memory: every stream's state, and the idempotency memory (bounded).

Both are built by folding the partition's records (a restore, or the catch-up after a snapshot):
``fold_event`` for the events topic, ``fold_result`` for the command-results topic. A group commit
advances them only after the log acknowledged its batch (``command_api.group_commit``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from blackboard.command_api.errors import IdempotencyKeyReused
from blackboard.command_api.known import Known, KnownMemory
from blackboard.command_api.results import StoredOutcome
from blackboard.domain.registry import DECIDERS
from blackboard.events.codec import PassedOver, UndecodableRecord, from_record, marker_of, passed_over, stream_header
from blackboard.events.log import StoredRecord
from blackboard.events.skips import Skip, skip_of, takes_version
from blackboard.schemas.api import Accepted, EventView, Outcome, Rejected
from blackboard.schemas.envelope import RecordedEvent, encode_token
from blackboard.schemas.registry import UnknownEventType, decode_event

__all__ = ["Held", "Known", "PartitionMemory", "hole_offset"]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Held:
    """A stream as its owner holds it: its decider's state and its version."""

    state: Any
    version: int


class PartitionMemory:
    """The streams and decided commands of ``events[partition]``, and how far the owner has read."""

    def __init__(self, partition: int, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.partition = partition
        self.clock = clock
        self.streams: dict[str, Held] = {}
        #: Streams with a record this build cannot fold, and why: their commands are refused.
        self.unreadable: dict[str, str] = {}
        #: The records of each unreadable stream after its first unreadable one, folded again when that one is skipped.
        self.held: dict[str, list[StoredRecord]] = {}
        #: The idempotency memory: the first outcome of each recent command, bounded (``command_api.known``).
        self.known = KnownMemory(partition)
        self.next_offset = 0
        self.results_offset = 0
        #: The next offset of ``commands[partition]`` to take: one past the highest answered there.
        self.commands_offset = 0
        self.epoch = 1
        #: The owner the last ownership marker named.
        self.marked_by: str | None = None

    def lookup(self, command_id: str, fingerprint: str) -> Outcome | None:
        """The first outcome of an already decided ``command_id``, or ``None``."""
        known = self.known.get(command_id)
        if known is None:
            return None
        if known.fingerprint != fingerprint:
            raise IdempotencyKeyReused(command_id)
        return known.outcome

    def reset(self) -> None:
        """Forget everything before a restore from offset 0."""
        self.streams.clear()
        self.unreadable.clear()
        self.held.clear()
        self.known.clear()
        self.next_offset = self.results_offset = self.commands_offset = 0
        self.marked_by = None

    def fold_event(self, rec: StoredRecord) -> None:
        """Fold one record of the events topic into the in-memory state (restore and catch-up).

        Note: a record of a stream this build cannot read (a newer schema version, a payload that
        does not decode) or that skips a version leaves a hole in that stream: the stream is marked
        unreadable and its commands are refused, never decided on the hole, until a build that
        reads it restores the partition, or an operator's skip of that record (``events.skips``) follows it.
        """
        self.next_offset = rec.offset + 1
        skip = skip_of(rec)
        if skip is not None:
            self._fold_skip(skip)
            return
        self._fold_record(rec)

    def _fold_record(self, rec: StoredRecord) -> None:
        marker = marker_of(rec)
        if marker is not None and passed_over(rec) == "ownership marker":
            self.epoch = max(self.epoch, marker.epoch + 1)
            self.marked_by = marker.owner
            return
        try:
            ev = from_record(rec)
            env = ev.envelope
        except PassedOver:
            return  # a fenced write: it never happened, for every fold alike
        except UndecodableRecord as exc:
            self._hole(stream_header(rec), rec, f"undecodable: {exc}")
            return
        try:
            event = decode_event(env.type, env.schema_version, env.payload)
        except (UnknownEventType, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._hole(env.stream, rec, f"undecodable: {exc}")
            return
        self.epoch = max(self.epoch, env.writer_epoch + 1)
        self._fold_decoded(rec, ev, event)

    def _fold_decoded(self, rec: StoredRecord, ev: RecordedEvent, event: msgspec.Struct) -> None:
        env = ev.envelope
        category = env.stream.partition(":")[0]
        current = self.streams.get(env.stream)
        version = current.version if current else 0
        if env.stream in self.unreadable:
            self.held.setdefault(env.stream, []).append(rec)
            return
        if env.stream_version <= version:  # a repeat of an event already folded (an ambiguous append)
            return
        if env.stream_version != version + 1 or category not in DECIDERS:
            self._hole(env.stream, rec, f"version {env.stream_version} of {env.stream} follows version {version}")
            return
        state = current.state if current else DECIDERS[category].initial_state
        self.streams[env.stream] = Held(DECIDERS[category].evolve(state, event), env.stream_version)
        self._remember_event(ev, event)

    def _hole(self, stream: str | None, rec: StoredRecord, reason: str) -> None:
        log.warning("restore.unreadable", partition=self.partition, offset=rec.offset, stream=stream, reason=reason)
        if stream is None:
            return
        if stream in self.unreadable:
            self.held.setdefault(stream, []).append(rec)
        else:
            self.unreadable[stream] = f"offset {rec.offset}: {reason}"

    def _fold_skip(self, skip: Skip) -> None:
        """Give up on the unreadable record ``skip`` names, as every fold does: the stream takes its version
        when exactly one behind (a stream not yet begun is at version 0: the skip of its first record
        begins it at version 1 with its decider's initial state), and the records held behind it are
        folded again, in log order.

        Note: a skip of a record that left no hole here (another build could read it) changes nothing.
        """
        stream = skip.stream
        if stream is None or hole_offset(self.unreadable.get(stream)) != skip.offset:
            return
        log.info("restore.skip", partition=self.partition, offset=skip.offset, stream=stream,
                 operator=skip.operator, reason=skip.reason)
        del self.unreadable[stream]
        current = self.streams.get(stream)
        category = stream.partition(":")[0]
        if takes_version(current.version if current else None, skip) and (current is not None or category in DECIDERS):
            state = current.state if current else DECIDERS[category].initial_state
            self.streams[stream] = Held(state, skip.stream_version or 0)
        for rec in self.held.pop(stream, []):
            self._fold_record(rec)

    def _remember_event(self, ev: RecordedEvent, event: msgspec.Struct) -> None:
        env = ev.envelope
        view = EventView(env.event_id, env.type, env.stream, env.stream_version, msgspec.to_builtins(event))
        known = self.known.get(env.command_id)
        previous = known.outcome.events if known and isinstance(known.outcome, Accepted) else []
        outcome = Accepted(
            command_id=env.command_id,
            stream=env.stream,
            version=env.stream_version,
            events=[*previous, view],
            position=encode_token({self.partition: ev.offset}),
        )
        self.known[env.command_id] = Known(env.command_hash, outcome)

    def fold_result(self, rec: StoredRecord) -> None:
        """Fold one record of the command-results topic (outcomes that left no event)."""
        self.results_offset = rec.offset + 1
        try:
            stored = msgspec.json.decode(rec.value or b"", type=StoredOutcome)
        except msgspec.DecodeError as exc:
            log.warning("restore.bad_result", partition=self.partition, offset=rec.offset, reason=str(exc))
            return
        if stored.commands_offset is not None:
            self.commands_offset = max(self.commands_offset, stored.commands_offset + 1)
        if stored.remember and isinstance(stored.outcome, Accepted | Rejected):
            self.known.setdefault(stored.command_id, Known(stored.fingerprint, stored.outcome))


def hole_offset(reason: str | None) -> int | None:
    """The offset of the record an ``unreadable`` reason names (``offset N: …``), or ``None``."""
    if reason is None or not reason.startswith("offset "):
        return None
    number = reason[len("offset "):].partition(":")[0]
    return int(number) if number.isdigit() else None
