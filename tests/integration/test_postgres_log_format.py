"""The PostgreSQL log's storage format moves on without rewriting a record: old rows read as they always did."""

from __future__ import annotations

import uuid
from importlib import resources

import asyncpg

from blackboard.events.log import Record
from blackboard.events.postgres import PostgresLog

HEADERS = (("type", b"project.created"), ("bin", b"\x00\xff"), ("type", b"repeated names keep their order"))


async def test_a_log_written_before_the_header_blob_migrates_and_reads_both_forms(pg_url: str) -> None:
    schema = f"log_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(pg_url, server_settings={"search_path": schema})
    try:
        # A log as the first version of the engine made it, with one record in the array form.
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(resources.files("blackboard.events.postgres").joinpath("sql/log/0001_log.sql").read_text())
        await conn.execute("INSERT INTO topics (topic, partitions) VALUES ('events', 1)")
        await conn.execute("INSERT INTO partitions (topic, partition, next_offset) VALUES ('events', 0, 1)")
        await conn.execute(
            "INSERT INTO records (topic, partition, \"offset\", key, header_keys, header_values, value, timestamp_ms) "
            "VALUES ('events', 0, 0, 'k', $1, $2, 'old', 1)", [k for k, _ in HEADERS], [v for _, v in HEADERS])

        log = PostgresLog(pg_url, schema=schema)
        await log.start()
        try:
            assert await log.append("events", 0, [Record(key=b"k", value=b"new", headers=HEADERS,
                                                         timestamp_ms=2)]) == 1
            reader = log.reader("events")
            try:
                await reader.seek(0, 0)
                got = await reader.read(max_records=10, timeout=1.0)
            finally:
                await reader.close()
            assert [(r.offset, r.value, r.headers) for r in got] == [(0, b"old", HEADERS), (1, b"new", HEADERS)]
            sizes = (await log.describe_topic("events")).partition_bytes
            assert sizes is not None and sizes[0] > 2 * sum(len(k) + len(v) for k, v in HEADERS)
        finally:
            await log.close()
        forms = await conn.fetch('SELECT "offset", headers IS NOT NULL AS blob, header_keys IS NOT NULL AS arrays '
                                 'FROM records ORDER BY "offset"')
        assert [tuple(r) for r in forms] == [(0, False, True), (1, True, False)]

        # Starting again finds the log migrated and changes nothing.
        again = PostgresLog(pg_url, schema=schema)
        await again.start()
        await again.close()
        assert await conn.fetchval("SELECT count(*) FROM records") == 2
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
