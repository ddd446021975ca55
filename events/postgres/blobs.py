"""A content-addressed blob store in PostgreSQL: bytes too large for a log record, found by their sha256.

The claim-check pattern: a large payload's bytes are stored here and its event carries only the
reference. The store keeps each blob in the stored form its caller chose (``encoding``, e.g. zlib)
with the size and sha256 of the original bytes; it does not decode them: the caller, who knows the
encoding, checks what it reads back against the key.

Note: the table lives in a schema of its own (``blob_schema``), never in a read-model schema: those
are rebuilt from the log per generation, and the log does not hold these bytes. A blob is written
BEFORE the command that refers to it is appended, so an event never names a missing blob; when the
append then fails, the blob stays as an orphan, which is harmless (the next save of the same bytes
finds it; nothing reads a blob no event names). The store is PostgreSQL's whichever engine holds the
log: it sits beside the PostgreSQL engine because it is PostgreSQL storage made by the same runner.
"""

from __future__ import annotations

import asyncpg
import msgspec

from blackboard.events.postgres.schema import SchemaFiles, migrate, quote_ident

#: The blob store's schema: ``sql/blobs``.
BLOB_SCHEMA = SchemaFiles("blackboard.events.postgres", "sql/blobs", "blob_migrations")


class StoredBlob(msgspec.Struct, frozen=True):
    """A blob as stored: ``data`` in ``encoding``; ``size`` and the key describe the original bytes."""

    sha256: str
    size: int
    encoding: str
    data: bytes


class BlobStore:
    """``put`` and ``get`` of blobs by sha256, in table ``blobs`` of ``schema``, over any pool of the database.

    Note: every statement names the schema, so the pool's ``search_path`` (a read-model generation's)
    does not matter and the read-model pool of the moment can be used.
    """

    def __init__(self, pool: asyncpg.Pool, schema: str = "blackboard_blobs") -> None:
        self.pool, self.schema = pool, schema
        self._table = f"{quote_ident(schema)}.blobs"

    async def ensure(self) -> None:
        """Create or upgrade the store's schema (idempotent; safe from processes starting together)."""
        await migrate(self.pool, self.schema, BLOB_SCHEMA)

    async def put(self, blob: StoredBlob) -> str:
        """Store ``blob``; return its key (its ``sha256``). Idempotent.

        Note: a blob already stored under the key stays as it is (``ON CONFLICT DO NOTHING``): the
        same key means the same original bytes, whatever encoding either copy used.
        """
        sql = (f"INSERT INTO {self._table} (sha256, size, encoding, data) VALUES ($1, $2, $3, $4) "
               "ON CONFLICT (sha256) DO NOTHING")
        args = (blob.sha256, blob.size, blob.encoding, blob.data)
        try:
            await self.pool.execute(sql, *args)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            await self.ensure()  # a process that did not create the store at start: create it now
            await self.pool.execute(sql, *args)
        return blob.sha256

    async def get(self, sha256: str) -> StoredBlob | None:
        """The blob stored under ``sha256``, as stored; ``None`` when there is no such blob."""
        try:
            row = await self.pool.fetchrow(f"SELECT size, encoding, data FROM {self._table} WHERE sha256 = $1",
                                           sha256)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return None
        if row is None:
            return None
        return StoredBlob(sha256, int(row["size"]), str(row["encoding"]), bytes(row["data"]))
