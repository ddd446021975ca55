"""Documents in Redis, written through by the projector and read first by the query API.

Each document is a hash ``{prefix}{kind}:{id}`` with ``v`` (its version), ``p`` and ``o`` (the
partition and offset of the last event it holds) and ``doc`` (the msgspec JSON of the view).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

# Writes every document whose stored version is absent or lower, in one atomic step, so that a
# slow writer can never put an older document over a newer one. ARGV[1] is the TTL; then four
# values per key: version, partition, offset, document. Returns how many keys it wrote.
_PUT_IF_NEWER = """
local ttl = ARGV[1]
local written = 0
for i, key in ipairs(KEYS) do
    local at = 2 + (i - 1) * 4
    local stored = tonumber(redis.call('HGET', key, 'v'))
    if stored == nil or stored < tonumber(ARGV[at]) then
        redis.call('HSET', key, 'v', ARGV[at], 'p', ARGV[at + 1], 'o', ARGV[at + 2], 'doc', ARGV[at + 3])
        redis.call('EXPIRE', key, ttl)
        written = written + 1
    end
end
return written
"""
_PUT_IF_NEWER_SHA = hashlib.sha1(_PUT_IF_NEWER.encode()).hexdigest()


class CacheUnavailable(Exception):
    """Redis failed or timed out; the caller serves from PostgreSQL instead."""


class CachedDoc(msgspec.Struct, frozen=True):
    """A document with the version and position it was built at."""

    kind: str
    id: str
    version: int
    partition: int
    offset: int
    doc: bytes


class DocumentCache:
    """Version-guarded documents in Redis.

    Note: one ``put_many`` sends all its keys in one script call, so on Redis Cluster the
    prefix must carry a hash tag (``{bb}:``) to keep them in one slot.
    """

    def __init__(self, redis: aioredis.Redis, *, prefix: str = "bb:", ttl_seconds: int = 3600) -> None:
        if ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be at least 1, got {ttl_seconds}")
        self.redis, self.prefix, self.ttl_seconds = redis, prefix, ttl_seconds

    def key(self, kind: str, ident: str) -> str:
        return f"{self.prefix}{kind}:{ident}"

    async def put_many(self, docs: Sequence[CachedDoc]) -> int:
        """Write every document that is newer than the stored one, in one script call; return how many."""
        if not docs:
            return 0
        keys = [self.key(d.kind, d.id) for d in docs]
        args: list[str | int | bytes] = [self.ttl_seconds]
        for d in docs:
            args += [d.version, d.partition, d.offset, d.doc]
        try:
            return await self._run_script(keys, args)
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis put of {len(docs)} documents failed: {exc!r}") from exc

    async def _run_script(self, keys: list[str], args: list[str | int | bytes]) -> int:
        try:
            written = await self.redis.evalsha(_PUT_IF_NEWER_SHA, len(keys), *keys, *args)
        except NoScriptError:
            # A restarted or flushed Redis forgot the script: load it once and go on.
            await self.redis.script_load(_PUT_IF_NEWER)
            written = await self.redis.evalsha(_PUT_IF_NEWER_SHA, len(keys), *keys, *args)
        return int(written)

    async def delete_many(self, entities: Sequence[tuple[str, str]]) -> None:
        """Remove the documents of ``(kind, id)`` pairs (the next read fills them from PostgreSQL)."""
        if not entities:
            return
        try:
            await self.redis.delete(*(self.key(kind, ident) for kind, ident in entities))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis delete of {len(entities)} documents failed: {exc!r}") from exc

    async def get(self, kind: str, ident: str) -> CachedDoc | None:
        """The cached document of ``kind`` ``ident``, or ``None`` when there is none."""
        try:
            v, p, o, doc = await self.redis.hmget(self.key(kind, ident), ["v", "p", "o", "doc"])
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis get of {kind} {ident!r} failed: {exc!r}") from exc
        if v is None or p is None or o is None or doc is None:
            return None
        body = doc if isinstance(doc, bytes) else str(doc).encode()
        return CachedDoc(kind, ident, int(v), int(p), int(o), body)
