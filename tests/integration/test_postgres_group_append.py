"""The PostgreSQL log appends the batches of several partitions in one statement: each batch lands whole at
dense offsets, a fenced batch is refused alone, and the others of its statement still land."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from blackboard.events.log import OffsetConflict, Record
from blackboard.events.postgres import PostgresLog


def _records(tag: str, n: int) -> list[Record]:
    return [Record(key=tag.encode(), value=f"{tag}-{i}".encode(), headers=(("i", str(i).encode()),))
            for i in range(n)]


async def test_concurrent_batches_share_statements_and_a_fenced_one_is_refused_alone(pg_url: str) -> None:
    log = PostgresLog(pg_url, schema=f"log_{uuid.uuid4().hex[:10]}")
    await log.start()
    try:
        await log.create_topic("events", 8)
        await asyncio.gather(*(log.append("events", p, _records(f"first{p}", 1)) for p in range(8)))
        # Eight writers at once, one of them fenced at an offset its partition has passed.
        appends = [log.append("events", p, _records(f"p{p}", p + 1), expected_offset=1 if p != 3 else 0)
                   for p in range(8)]
        outcomes = await asyncio.gather(*appends, return_exceptions=True)
        refused = outcomes[3]
        assert isinstance(refused, OffsetConflict) and (refused.expected, refused.actual) == (0, 1)
        assert [o for p, o in enumerate(outcomes) if p != 3] == [1] * 7
        assert log._appends.statements < log._appends.batches  # they shared statements
        for p in range(8):
            assert await log.end_offset("events", p) == (1 if p == 3 else 2 + p)
            reader = log.reader("events")
            try:
                await reader.seek(p, 0)
                got = await reader.read(max_records=100, timeout=1.0)
            finally:
                await reader.close()
            expected = [f"first{p}-0"] + ([] if p == 3 else [f"p{p}-{i}" for i in range(p + 1)])
            assert [r.value.decode() for r in got if r.value is not None] == expected
            assert [r.offset for r in got] == list(range(len(expected)))
    finally:
        await log.close()


async def test_an_append_after_close_is_refused_as_unavailable(pg_url: str) -> None:
    from blackboard.events.log import LogUnavailable

    log = PostgresLog(pg_url, schema=f"log_{uuid.uuid4().hex[:10]}")
    await log.start()
    await log.create_topic("events", 1)
    await log.close()
    with pytest.raises(LogUnavailable):
        await log.append("events", 0, _records("late", 1))


async def test_appends_keep_their_connections_and_one_cut_off_is_replaced(pg_url: str) -> None:
    from blackboard.events.log import LogUnavailable

    log = PostgresLog(pg_url, schema=f"log_{uuid.uuid4().hex[:10]}")
    await log.start()
    try:
        await log.create_topic("events", 1)
        for i in range(3):
            assert await log.append("events", 0, _records(f"a{i}", 1), expected_offset=i) == i
        # One statement at a time: one connection, kept, not back in the pool between appends.
        assert len(log._appends._idle) == 1
        kept = log._appends._idle[0]
        assert log.pool.get_idle_size() < log.pool.get_size()
        pid = kept.get_server_pid()
        await log.pool.execute("SELECT pg_terminate_backend($1)", pid)  # an outage of that one connection
        with pytest.raises(LogUnavailable):
            await log.append("events", 0, _records("cut", 1), expected_offset=3)
        assert log._appends._idle == []
        # The next append takes a new connection: nothing was appended by the cut one.
        assert await log.append("events", 0, _records("next", 1), expected_offset=3) == 3
        assert log._appends._idle[0].get_server_pid() != pid
        # A kept connection that closes while idle is passed over: the next append opens another, and lands.
        pid = log._appends._idle[0].get_server_pid()
        await log.pool.execute("SELECT pg_terminate_backend($1)", pid)
        await asyncio.sleep(0.2)
        assert await log.append("events", 0, _records("after", 1), expected_offset=4) == 4
        assert log._appends._idle[0].get_server_pid() != pid
    finally:
        await log.close()
    assert log._appends._idle == []
