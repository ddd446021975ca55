"""A content-addressed blob store in PostgreSQL: bytes too large for a log record, found by their sha256.

The claim-check pattern: a large checkpoint's bytes are stored here and its event carries only the
reference. The key is the sha256 of the bytes as the client gave them; the row keeps them in their
stored form (zlib or identity), and ``get`` hands back the original bytes only after checking them
against the key.

Note: the table lives in a schema of its own (``blob_schema``), never in a read-model schema: those
are rebuilt from the log per generation, and the log does not hold these bytes. A blob is written
BEFORE the command that refers to it is appended, so an event never names a missing blob; when the
append then fails, the blob stays as an orphan, which is harmless (the next save of the same bytes
finds it; nothing reads a blob no event names).
"""

from __future__ import annotations

import asyncio

import asyncpg

from blackboard.schemas.checkpoint import CheckpointCorrupt, Encoded, decode, encode


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class BlobCorrupt(CheckpointCorrupt):
    """A stored blob does not decode to the bytes its key names: the store was damaged."""


class BlobStore:
    """``put`` and ``get`` of blobs by sha256, in table ``blobs`` of ``schema``, over any pool of the database.

    Note: every statement names the schema, so the pool's ``search_path`` (a read-model generation's)
    does not matter and the read-model pool of the moment can be used.
    """

    def __init__(self, pool: asyncpg.Pool, schema: str = "blackboard_blobs") -> None:
        self.pool, self.schema = pool, schema
        self._table = f"{_quote(schema)}.blobs"

    async def ensure(self) -> None:
        """Create the schema and the table when missing (idempotent; safe from processes starting together)."""
        async with self.pool.acquire() as conn, conn.transaction():
            # Two concurrent CREATE ... IF NOT EXISTS can still collide on the catalog: serialise them.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('blackboard.blobs:' || $1))", self.schema)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(self.schema)}")
            await conn.execute(f"""
                CREATE TABLE IF NOT EXISTS {self._table} (
                    sha256      text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{{64}}$'),
                    size        bigint      NOT NULL CHECK (size >= 0),
                    encoding    text        NOT NULL CHECK (encoding IN ('zlib', 'identity')),
                    data        bytea       NOT NULL,
                    created_at  timestamptz NOT NULL DEFAULT now()
                )""")

    async def put(self, data: bytes) -> str:
        """Store ``data`` (compressed when that makes it smaller); return its sha256 hex. Idempotent."""
        return await self.put_encoded(encode(data))

    async def put_encoded(self, encoded: Encoded) -> str:
        """Store bytes already in their stored form (``encode``'s result); return their sha256 hex.

        Note: a blob already stored under the key stays as it is (``ON CONFLICT DO NOTHING``): the
        same key means the same bytes, whatever encoding either copy used.
        """
        sql = (f"INSERT INTO {self._table} (sha256, size, encoding, data) VALUES ($1, $2, $3, $4) "
               "ON CONFLICT (sha256) DO NOTHING")
        args = (encoded.sha256, encoded.size, encoded.encoding, encoded.data)
        try:
            await self.pool.execute(sql, *args)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            await self.ensure()  # a process that did not create the store at start: create it now
            await self.pool.execute(sql, *args)
        return encoded.sha256

    async def get(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256``, checked against it; ``None`` when there is no such blob.

        Raises ``BlobCorrupt`` when the stored bytes do not decode to that size and sha256.
        """
        try:
            row = await self.pool.fetchrow(f"SELECT size, encoding, data FROM {self._table} WHERE sha256 = $1",
                                           sha256)
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return None
        if row is None:
            return None
        try:
            return await asyncio.to_thread(decode, row["data"], row["encoding"], row["size"], sha256)
        except CheckpointCorrupt as exc:
            raise BlobCorrupt(f"blob {sha256}: {exc}") from None
