"""The cache's documents read together: the reads asked for in one turn of the event loop go to Redis as one
pipeline.

Under load many reads reach the cache in the same turn (the HTTP server starts the requests that arrived
together, and each runs to its cache read without waiting on anything else). One ``HMGET`` each through
redis-py costs a connection taken from the pool and given back, a socket write and a reply read apiece;
sent as one pipeline they share all three, and each read keeps only its command's packing and parsing.
A read alone goes at once; under load a read waits for one more turn of the loop than before, no more: the turn
in which the others join it.

The documents and their freshness are exactly ``DocumentCache.get``'s: the same hash, the same fields, the
same ``None`` for a document that is not there; a Redis failure fails every read of the pipeline with
``CacheUnavailable``, and each caller falls back to PostgreSQL as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError

from blackboard.projector.cache import CachedDoc, CacheUnavailable, DocumentCache

_FIELDS = ("v", "p", "o", "doc")

#: One read waiting for the pipeline: what it asked for and where its answer goes.
_Waiting = tuple[str, str, "asyncio.Future[CachedDoc | None]"]


class CachedGets:
    """``get`` as ``DocumentCache.get``, the gets of one turn of the loop sent to Redis together.

    A read while nothing else is on its way to Redis goes at once, alone: a read seldom waits for another. While
    some are on their way, the first read of a turn leads: it yields once, so that the reads started in the same
    turn join it, then sends them all and hands each its answer (no task is made for it).
    """

    def __init__(self, cache: DocumentCache) -> None:
        self.cache = cache
        self._gathering: list[_Waiting] | None = None
        #: Reads and pipelines on their way to Redis now.
        self._sending = 0
        self._apart: set[asyncio.Task[None]] = set()

    async def get(self, kind: str, ident: str) -> CachedDoc | None:
        """The cached document of ``kind`` ``ident``, or ``None``; ``CacheUnavailable`` when Redis fails."""
        answer: asyncio.Future[CachedDoc | None] = asyncio.get_running_loop().create_future()
        if self._gathering is not None:
            self._gathering.append((kind, ident, answer))
            return await answer
        if not self._sending:
            # Nothing on its way to Redis: this read goes at once, alone, and waits no turn for others.
            self._sending += 1
            try:
                await self._pipeline([(kind, ident, answer)])
            finally:
                self._sending -= 1
            return answer.result()
        batch = self._gathering = [(kind, ident, answer)]
        self._sending += 1
        try:
            await asyncio.sleep(0)
            self._gathering = None
            await self._pipeline(batch)
        except asyncio.CancelledError:
            # The leader's caller went away (its client did): the others are sent without it.
            if self._gathering is batch:
                self._gathering = None
            self._send_apart([w for w in batch if w[2] is not answer and not w[2].done()])
            raise
        finally:
            self._sending -= 1
        return answer.result()

    def _send_apart(self, batch: list[_Waiting]) -> None:
        if batch:
            task = asyncio.ensure_future(self._pipeline(batch))
            self._apart.add(task)
            task.add_done_callback(self._apart.discard)

    async def _pipeline(self, batch: list[_Waiting]) -> None:
        try:
            replies = await self._replies(batch)
        except Exception as exc:  # each read fails as its own would have: CacheUnavailable, or the error
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (kind, ident, answer), reply in zip(batch, replies, strict=True):
            if answer.done():  # its caller was cancelled
                continue
            if isinstance(reply, RedisError):
                answer.set_exception(CacheUnavailable(f"redis get of {kind} {ident!r} failed: {reply!r}"))
                continue
            try:
                answer.set_result(cached_doc(kind, ident, reply))
            except Exception as exc:  # a document that is not one fails its own read only
                answer.set_exception(exc)

    async def _replies(self, batch: list[_Waiting]) -> list[Any]:
        try:
            if len(batch) == 1:
                kind, ident, _ = batch[0]
                return [await self.cache.redis.hmget(self.cache.key(kind, ident), _FIELDS)]
            pipe = self.cache.redis.pipeline(transaction=False)
            for kind, ident, _ in batch:
                pipe.hmget(self.cache.key(kind, ident), _FIELDS)
            # A command's own error (a key of another type) fails that read alone, as one HMGET would.
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"redis get of {len(batch)} documents failed: {exc!r}") from exc


def cached_doc(kind: str, ident: str, reply: Any) -> CachedDoc | None:
    """The document of an ``HMGET`` of its four fields, or ``None`` when any is missing (as ``DocumentCache.get``)."""
    v, p, o, doc = reply
    if v is None or p is None or o is None or doc is None:
        return None
    body = doc if isinstance(doc, bytes) else str(doc).encode()
    return CachedDoc(kind, ident, int(v), int(p), int(o), body)
