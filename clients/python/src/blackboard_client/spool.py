"""The durable offline spool: commands that could not be delivered wait here, on disk, in order.

SQLite in WAL mode with ``synchronous=FULL``: ``put`` returns only once the command is on disk (a
``kill -9`` or a power cut right after it loses nothing), and each insert is one atomic transaction.
Delivery (``flush`` in the clients) sends the oldest first, with its original ``command_id``, and
deletes it only once the server answered: a crash in between sends it again, which the server
recognises by its id and does not apply twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import IO, Any

import msgspec

from blackboard_client.errors import SpoolFull, SpoolInUse
from blackboard_client.models import Spooled, SpoolRejection

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    stream TEXT NOT NULL,
    body BLOB NOT NULL,
    spooled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    command_id TEXT NOT NULL,
    type TEXT NOT NULL,
    stream TEXT NOT NULL,
    body BLOB NOT NULL,
    status INTEGER NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
"""


class SpoolEntry(msgspec.Struct, frozen=True):
    """A spooled command: its place in the spool, and the exact body to send."""

    seq: int
    command_id: str
    type: str
    stream: str
    body: bytes


def by_stream(batch: list[SpoolEntry]) -> list[list[SpoolEntry]]:
    """``batch`` split by stream, each stream's entries in spool order (streams in order of first appearance)."""
    groups: dict[str, list[SpoolEntry]] = {}
    for entry in batch:
        groups.setdefault(entry.stream, []).append(entry)
    return list(groups.values())


class Spool:
    """A bounded, durable queue of command bodies in one SQLite file.

    ``max_commands`` and ``max_bytes`` bound it; ``put`` past either raises ``SpoolFull`` and stores
    nothing, so nothing already spooled is ever dropped.

    Note: one client at a time per file (a lock file next to it says so; the kernel frees it when the
    process dies, even by ``kill -9``): two deliverers of one spool would race on its order.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_commands: int = 100_000,
                 max_bytes: int = 256 * 1024 * 1024) -> None:
        self.path = Path(path)
        self.max_commands, self.max_bytes = max_commands, max_bytes
        self._lock_file = _exclusive(self.path.with_name(self.path.name + ".lock"))
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def put(self, command_id: str, type_: str, stream: str, body: bytes) -> Spooled:
        """Store one command durably (committed and fsync'd before returning); ``SpoolFull`` past a bound.

        The same ``command_id`` twice is stored once (the first body stays)."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._db.execute("SELECT seq FROM spool WHERE command_id = ?", (command_id,)).fetchone()
                if found is None:
                    self._check_room(len(body))
                    found = self._db.execute(
                        "INSERT INTO spool (command_id, type, stream, body, spooled_at) VALUES (?, ?, ?, ?, ?) "
                        "RETURNING seq", (command_id, type_, stream, body, time.time())).fetchone()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return Spooled(command_id, stream, type_, int(found[0]))

    def _check_room(self, size: int) -> None:
        count, used = self._db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM spool").fetchone()
        if count + 1 > self.max_commands or used + size > self.max_bytes:
            raise SpoolFull(count, used, self.max_commands, self.max_bytes)

    def head(self, limit: int = 100) -> list[SpoolEntry]:
        """The oldest ``limit`` commands, oldest first."""
        with self._mutex:
            rows = self._db.execute("SELECT seq, command_id, type, stream, body FROM spool ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        return [SpoolEntry(int(r[0]), r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def delivered(self, seq: int) -> None:
        """The server answered ``seq`` (accepted, or the same outcome again): it leaves the spool."""
        with self._mutex:
            self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))

    def refused(self, entry: SpoolEntry, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        """The server refused ``entry``: it moves, in one transaction, to the rejected list."""
        with self._mutex:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO rejected VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry.seq, entry.command_id, entry.type, entry.stream, entry.body, status, code, message,
                     json.dumps(details), time.time()))
                self._db.execute("DELETE FROM spool WHERE seq = ?", (entry.seq,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def entries(self) -> list[Spooled]:
        """Everything that waits, oldest first."""
        with self._mutex:
            rows = self._db.execute("SELECT command_id, stream, type, seq FROM spool ORDER BY seq").fetchall()
        return [Spooled(r[0], r[1], r[2], int(r[3])) for r in rows]

    def count(self) -> int:
        with self._mutex:
            return int(self._db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def rejected(self) -> list[SpoolRejection]:
        """The spooled commands the server refused on delivery, oldest first (kept until ``clear_rejected``)."""
        with self._mutex:
            rows = self._db.execute("SELECT command_id, stream, type, status, code, message, details, body "
                                    "FROM rejected ORDER BY seq").fetchall()
        return [SpoolRejection(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]),
                               msgspec.json.decode(r[7]).get("payload", {})) for r in rows]

    def clear_rejected(self) -> None:
        with self._mutex:
            self._db.execute("DELETE FROM rejected")

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._lock_file.close()


def _exclusive(path: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``path`` (POSIX); ``SpoolInUse`` when another open spool holds it."""
    handle = open(path, "a+b")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock; the note above applies
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolInUse(f"{path} is held by another client") from None
    return handle
