"""The idempotency memory of one partition: the first outcome of each recently decided ``command_id``,
bounded by count and by bytes.

A partition owner answers a repeated ``command_id`` with its first outcome from here. Kept without a
bound, every outcome with its event payloads stays in memory for the owner's life. So the memory
keeps the most recent commands, as it learnt them, while both bounds hold, and forgets the oldest
first; a restore (snapshot or log) learns the same commands through the same bounds.

Note: a command repeated after it was forgotten (more than ``max_count`` later commands, or
``max_bytes`` of later outcomes, on its partition) is decided again. Every answer a live caller
retries is far younger than that; the bounds are settings (``known_max_commands``,
``known_max_bytes``) and ``GET /v1/partitions`` and the metrics show how full the memory is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from prometheus_client import Counter, Gauge

from blackboard.schemas.api import Outcome

#: Defaults of the bounds (one partition's memory).
MAX_COMMANDS = 100_000
MAX_BYTES = 64 * 1_048_576
#: The most recent commands never forgotten, whatever the byte bound says: as many as one group commit
#: decides (``owner.MAX_GROUP``), so a group's own outcomes are still here when it answers its callers.
KEEP_AT_LEAST = 256
#: An outcome held as Python objects takes about this many times its msgpack encoding, and an entry this
#: many bytes beyond it and its two strings (dict slot, ``Known``, string headers): measured on outcomes
#: of one event (317 bytes encoded, about 1,040 bytes held).
_OBJECT_FACTOR = 2.5
_ENTRY_OVERHEAD = 250

COMMANDS = Gauge("blackboard_idempotency_commands", "Command ids a partition owner remembers", ["partition"])
BYTES = Gauge("blackboard_idempotency_bytes", "Estimated bytes of a partition owner's remembered outcomes",
              ["partition"])
EVICTIONS = Counter("blackboard_idempotency_evictions_total",
                    "Command ids a partition owner forgot, oldest first, to stay within its bounds", ["partition"])

_encode = msgspec.msgpack.Encoder().encode


@dataclass(slots=True)
class Known:
    """A decided command: its outcome and the fingerprint that proves a repeat is the same command."""

    fingerprint: str
    outcome: Outcome


def entry_bytes(command_id: str, known: Known) -> int:
    """The bytes ``known`` is counted at: an estimate of what it holds in memory, from its outcome's encoding."""
    held = int(len(_encode(known.outcome)) * _OBJECT_FACTOR)
    return len(command_id) + len(known.fingerprint) + held + _ENTRY_OVERHEAD


class Arrivals:
    """The keys of a dict in the order they arrived, so that the oldest is found in constant time.

    Note: ``next(iter(d))`` is not constant time on a dict whose oldest keys were deleted: CPython
    scans the deleted slots before the first live one, until the dict is next resized. On a full
    memory that forgets one key per write, that scan grew to tens of µs per write (60 µs per
    command at 100,000 commands held), most of a restore from the log and a cost on every decide.
    """

    __slots__ = ("_gone", "_keys")

    def __init__(self) -> None:
        self._keys: deque[str] = deque()
        #: Keys deleted other than through ``oldest``, by how many of their arrivals that left stale.
        self._gone: dict[str, int] = {}

    def arrived(self, key: str) -> None:
        """``key`` was added (not replaced) to the dict."""
        self._keys.append(key)

    def left(self, key: str) -> None:
        """``key`` was deleted from the dict, not as its oldest: its arrival is passed over."""
        self._gone[key] = self._gone.get(key, 0) + 1

    def oldest(self) -> str:
        """The oldest key still in the dict (the one ``next(iter(d))`` gives), taken out of this order."""
        while True:
            key = self._keys.popleft()
            stale = self._gone.get(key)
            if not stale:
                return key
            if stale == 1:
                del self._gone[key]
            else:
                self._gone[key] = stale - 1

    def clear(self) -> None:
        self._keys.clear()
        self._gone.clear()


V = TypeVar("V")


class _Counted(dict[str, V]):
    """A dict whose every write and removal goes through ``__setitem__`` and ``__delitem__`` (``setdefault``,
    ``update`` and ``pop`` too), where a subclass counts arrivals and forgets the oldest."""

    def setdefault(self, command_id: str, default: V) -> V:
        found = self.get(command_id)
        if found is None:
            self[command_id] = found = default
        return found

    def update(self, other: Any = (), /, **kw: V) -> None:
        pairs: Iterable[tuple[str, V]] = other.items() if isinstance(other, Mapping) else other
        for command_id, value in [*pairs, *kw.items()]:
            self[command_id] = value

    def pop(self, command_id: str, *default: Any) -> Any:
        if command_id not in self:
            return super().pop(command_id, *default)
        found = self[command_id]
        del self[command_id]
        return found


class KnownMemory(_Counted[Known]):
    """``command_id`` → ``Known``, oldest first, bounded by ``max_count`` entries and ``max_bytes``.

    Note: a dict, so reads cost what a dict's cost; every write goes through ``__setitem__``
    (``setdefault`` and ``update`` too), which counts the entry and forgets the oldest beyond a bound.
    Replacing an entry keeps its place: it was learnt when it was first decided.
    """

    def __init__(self, partition: int, *, max_count: int = MAX_COMMANDS, max_bytes: int = MAX_BYTES) -> None:
        super().__init__()
        self.partition, self.max_count, self.max_bytes = partition, max_count, max_bytes
        self.bytes = 0
        self.evicted = 0
        self._sizes: dict[str, int] = {}
        self._arrivals = Arrivals()
        self._evictions: Any = None  # the partition's series of EVICTIONS, once it has forgotten a command

    def __setitem__(self, command_id: str, known: Known) -> None:
        size = entry_bytes(command_id, known)
        previous = self._sizes.get(command_id)
        if previous is None:
            self._arrivals.arrived(command_id)
        self.bytes += size - (previous or 0)
        self._sizes[command_id] = size
        super().__setitem__(command_id, known)
        if len(self) > self.max_count or self.bytes > self.max_bytes:
            self._trim()

    def __delitem__(self, command_id: str) -> None:
        super().__delitem__(command_id)
        self.bytes -= self._sizes.pop(command_id)
        self._arrivals.left(command_id)

    def bound(self, *, max_count: int, max_bytes: int) -> None:
        """Set the bounds, forgetting at once what is beyond them; the metrics show this memory from now on."""
        self.max_count, self.max_bytes = max_count, max_bytes
        self._trim()
        label = str(self.partition)
        # Read at scrape time: nothing on the decide path.
        COMMANDS.labels(label).set_function(lambda: len(self))
        BYTES.labels(label).set_function(lambda: self.bytes)

    def clear(self) -> None:
        super().clear()
        self._sizes.clear()
        self._arrivals.clear()
        self.bytes = 0

    def _trim(self) -> None:
        forgotten = 0
        while len(self) > KEEP_AT_LEAST and (len(self) > self.max_count or self.bytes > self.max_bytes):
            oldest = self._arrivals.oldest()
            super().__delitem__(oldest)
            self.bytes -= self._sizes.pop(oldest)
            forgotten += 1
        if forgotten:
            self.evicted += forgotten
            if self._evictions is None:
                self._evictions = EVICTIONS.labels(str(self.partition))
            self._evictions.inc(forgotten)

    def state(self) -> dict[str, int]:
        """How full it is, for ``GET /v1/partitions``."""
        return {"commands": len(self), "bytes": self.bytes, "evicted": self.evicted,
                "max_commands": self.max_count, "max_bytes": self.max_bytes}


class BoundedIndex(_Counted[int]):
    """``command_id`` → partition of the commands decided here, the ``limit`` most recent (oldest forgotten first)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self._arrivals = Arrivals()

    def __setitem__(self, command_id: str, partition: int) -> None:
        if command_id not in self:
            self._arrivals.arrived(command_id)
        super().__setitem__(command_id, partition)
        if len(self) > self.limit:
            super().__delitem__(self._arrivals.oldest())

    def __delitem__(self, command_id: str) -> None:
        super().__delitem__(command_id)
        self._arrivals.left(command_id)

    def clear(self) -> None:
        super().clear()
        self._arrivals.clear()
