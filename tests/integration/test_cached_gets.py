"""The cache's reads of one turn sent as one pipeline: each gets its own document, as ``DocumentCache.get`` would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from benchmarks.server import free_port
from blackboard.events.partitioner import partition_for
from blackboard.projector.cache import CachedDoc, CacheUnavailable, DocumentCache
from blackboard.projector.migrate import create_pool, migrate
from blackboard.query_api.cached_gets import CachedGets
from blackboard.query_api.consistency import OffsetWatch
from blackboard.query_api.reads import ReadService
from blackboard.schemas.envelope import encode_token
from blackboard.schemas.errors import NotFound

PARTITIONS = 8


@pytest.fixture
async def cache(redis_url: str, redis_prefix: str) -> AsyncIterator[DocumentCache]:
    client = aioredis.from_url(redis_url, socket_timeout=2.0)
    yield DocumentCache(client, prefix=redis_prefix, ttl_seconds=60)
    await client.aclose()


async def connections_received(redis_url: str) -> int:
    admin = aioredis.from_url(redis_url)
    try:
        return int((await admin.info("stats"))["total_connections_received"])
    finally:
        await admin.aclose()


async def test_the_reads_of_one_turn_go_together_and_each_gets_its_own(cache: DocumentCache, redis_url: str) -> None:
    docs = [CachedDoc("project", f"p-{i}", i + 1, i % 8, 10 * i, f'{{"i":{i}}}'.encode()) for i in range(20)]
    await cache.put_many(docs)
    await cache.redis.hset(cache.key("project", "half"), mapping={"v": 1, "doc": b"{}"})  # no p, no o
    fresh = aioredis.from_url(redis_url, socket_timeout=2.0)
    gets = CachedGets(DocumentCache(fresh, prefix=cache.prefix))
    before = await connections_received(redis_url)
    try:
        found = await asyncio.gather(*(gets.get("project", f"p-{i}") for i in range(20)),
                                     gets.get("project", "absent"), gets.get("project", "half"))
    finally:
        await fresh.aclose()

    assert found == [*docs, None, None]
    # Two connections of a fresh client carried all twenty-two reads (one at a time, they take twenty-two): the
    # first read went at once, alone, and the others together. The third connection counted is the one that asks.
    assert await connections_received(redis_url) - before == 3
    assert [await cache.get("project", f"p-{i}") for i in range(20)] == docs  # the same as one at a time


async def test_a_read_alone_goes_at_once_and_reads_behind_it_go_together(cache: DocumentCache) -> None:
    doc = CachedDoc("task", "t-1", 3, 1, 7, b'{"id":"t-1"}')
    await cache.put_many([doc])
    gets = CachedGets(cache)
    assert await gets.get("task", "t-1") == doc
    alone = asyncio.ensure_future(gets.get("task", "t-1"))
    behind = [asyncio.ensure_future(gets.get("task", "t-1")) for _ in range(3)]
    await asyncio.sleep(0)  # each has taken its first step: the first is on its way, the others gathered
    assert gets._sending == 2 and gets._gathering is not None and len(gets._gathering) == 3
    assert await asyncio.gather(alone, *behind) == [doc] * 4
    assert gets._sending == 0 and gets._gathering is None


async def test_the_others_are_answered_whenever_the_read_that_leads_them_is_cancelled(cache: DocumentCache) -> None:
    doc = CachedDoc("task", "t-2", 1, 2, 3, b"{}")
    await cache.put_many([doc])
    gets = CachedGets(cache)
    for turns in range(6):  # cancelled while the others join it, or while its pipeline is on its way
        leader = asyncio.ensure_future(gets.get("task", "t-2"))
        others = [asyncio.ensure_future(gets.get("task", "t-2")) for _ in range(3)]
        for _ in range(turns):
            await asyncio.sleep(0)
        leader.cancel()
        assert await asyncio.wait_for(asyncio.gather(*others), 5) == [doc] * 3
        assert await gets.get("task", "t-2") == doc  # and the next turn leads anew


async def test_a_key_that_is_not_a_document_fails_its_own_read_only(cache: DocumentCache) -> None:
    doc = CachedDoc("project", "p-1", 1, 0, 0, b"{}")
    await cache.put_many([doc])
    await cache.redis.set(cache.key("project", "text"), "not a hash")
    await cache.redis.hset(cache.key("project", "bad"), mapping={"v": "one", "p": 0, "o": 0, "doc": b"{}"})
    gets = CachedGets(cache)
    found = await asyncio.gather(gets.get("project", "p-1"), gets.get("project", "text"), gets.get("project", "bad"),
                                 return_exceptions=True)
    assert found[0] == doc and isinstance(found[1], CacheUnavailable) and isinstance(found[2], ValueError), found


async def test_a_redis_that_is_not_there_fails_every_read_of_the_turn() -> None:
    client = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    gets = CachedGets(DocumentCache(client, prefix="x:", ttl_seconds=60))
    try:
        failed = await asyncio.gather(*(gets.get("project", f"p-{i}") for i in range(3)), return_exceptions=True)
        assert all(isinstance(f, CacheUnavailable) for f in failed), failed
        with pytest.raises(CacheUnavailable):
            await gets.get("project", "alone")
    finally:
        await client.aclose()


async def test_a_cached_document_behind_the_token_of_its_partition_is_not_served(
        cache: DocumentCache, pg_url: str) -> None:
    pool = await create_pool(pg_url, "blackboard", min_size=1, max_size=2)
    try:
        await migrate(pool, "blackboard")
        watch = OffsetWatch(pool, topic="events")
        watch.positions = dict.fromkeys(range(PARTITIONS), 100)  # the projection is past every token below
        reads = ReadService(pool, watch, cache=cache, partitions=PARTITIONS, consistency_timeout=1.0)
        mine = partition_for("p-1", PARTITIONS)
        await cache.put_many([CachedDoc("project", "p-1", 2, mine, 9, b'{"cached":true}')])

        for token in (None, encode_token({mine: 9}), encode_token({(mine + 1) % PARTITIONS: 50})):
            assert await reads.project("p-1", token) == b'{"cached":true}'
        # The cache holds the project up to offset 9 of its partition; a write at 10 must be read from PostgreSQL
        # (where this project is not: the read says so rather than answer the older document).
        with pytest.raises(NotFound):
            await reads.project("p-1", encode_token({mine: 10}))
    finally:
        await pool.close()
