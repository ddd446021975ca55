"""Checkpoints of several MB: saved, read back byte for byte, restored, and never a log record over 1 MiB."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import httpx

from blackboard.app import Runtime
from blackboard.config import Settings
from blackboard.events.log import StoredRecord
from blackboard.events.postgres.blobs import BlobStore, StoredBlob
from blackboard.schemas.checkpoint import encode
from tests.integration.harness import command, running

MiB = 1_048_576
OCTETS = {"Content-Type": "application/octet-stream"}


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


def text_bytes(size: int) -> bytes:
    """Compressible, but not trivially: lines with counters."""
    lines = b"".join(b"step %08d: state=%d ok\n" % (i, i * 7 % 1000) for i in range(size // 24 + 1))
    return lines[:size]


def half_random(size: int) -> bytes:
    return os.urandom(size // 4) + b"\0" * (size - size // 4)


async def save(client: httpx.AsyncClient, thread: str, data: bytes, **params: Any) -> dict[str, Any]:
    headers = {**OCTETS, **params.pop("headers", {})}
    response = await client.put(f"/v1/checkpoints/{thread}", content=data, headers=headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def read(client: httpx.AsyncClient, path: str, token: str, **headers: str) -> httpx.Response:
    return await client.get(path, headers={"Blackboard-Consistency": token, **headers})


async def raw_events(runtime: Runtime, settings: Settings) -> list[StoredRecord]:
    """Every record of the events topic as the log stores it (key, value and headers)."""
    assert runtime.log is not None
    records: list[StoredRecord] = []
    for p in range(await runtime.log.partition_count(settings.events_topic)):
        end = await runtime.log.end_offset(settings.events_topic, p)
        if end == 0:
            continue
        reader = runtime.log.reader(settings.events_topic)
        try:
            await reader.seek(p, 0)
            got = 0
            while got < end:
                for rec in await reader.read(max_records=1000, timeout=2.0):
                    records.append(rec)
                    got = rec.offset + 1
        finally:
            await reader.close()
    return records


def record_size(rec: StoredRecord) -> int:
    return len(rec.key or b"") + len(rec.value or b"") + sum(len(k) + len(v) for k, v in rec.headers)


async def test_large_checkpoints_round_trip_restore_and_stay_under_the_record_limit(settings: Settings) -> None:
    settings = settings.model_copy(update={"checkpoint_max_bytes": 6 * MiB})
    incompressible, compressible, mixed = random_bytes(5 * MiB), text_bytes(5 * MiB), half_random(5 * MiB)
    async with running(settings) as (client, runtime):
        first = await save(client, "wf-1", incompressible, label="start",
                           headers={"X-Checkpoint-Metadata": '{"step": 1, "node": "plan"}'})
        second = await save(client, "wf-1", compressible, parent_seq=1)
        third = await save(client, "wf-1", mixed)
        assert [c["seq"] for c in (first, second, third)] == [1, 2, 3]
        assert (first["encoding"], first["blob"]) == ("identity", True)
        assert second["encoding"] == "zlib" and second["stored_size"] < 5 * MiB // 4
        assert (third["encoding"], third["blob"]) == ("zlib", True)

        latest = await read(client, "/v1/checkpoints/wf-1", third["position"])
        assert latest.status_code == 200, latest.text
        assert latest.content == mixed and latest.headers["content-type"] == "application/octet-stream"
        assert latest.headers["x-checkpoint-seq"] == "3"
        assert latest.headers["x-checkpoint-sha256"] == hashlib.sha256(mixed).hexdigest()
        not_modified = await read(client, "/v1/checkpoints/wf-1", third["position"],
                                  **{"If-None-Match": latest.headers["etag"]})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert (await read(client, "/v1/checkpoints/wf-1/1", third["position"])).content == incompressible
        assert (await read(client, "/v1/checkpoints/wf-1/2", third["position"])).content == compressible

        await _restores(client, incompressible, compressible)
        await _history(client)
        await _refusals(client, runtime, settings)

        sizes = [record_size(r) for r in await raw_events(runtime, settings)]
        assert len(sizes) == 5 and max(sizes) < MiB, sizes


async def _restores(client: httpx.AsyncClient, incompressible: bytes, compressible: bytes) -> None:
    response = await client.post("/v1/checkpoints/wf-1/restore", json={"seq": 1, "label": "retry"})
    assert response.status_code == 200, response.text
    assert (response.json()["seq"], response.json()["restored_from"]) == (4, 1)
    latest = await read(client, "/v1/checkpoints/wf-1", response.json()["position"])
    assert latest.content == incompressible and latest.headers["x-checkpoint-seq"] == "4"

    # A restore of an inline checkpoint reads the bytes of the original's entry.
    again = await client.post("/v1/checkpoints/wf-1/restore", json={"seq": 2}, headers={"Idempotency-Key": "r-2"})
    replay = await client.post("/v1/checkpoints/wf-1/restore", json={"seq": 2}, headers={"Idempotency-Key": "r-2"})
    assert again.json()["seq"] == replay.json()["seq"] == 5 and replay.headers["idempotent-replayed"] == "true"
    latest = await read(client, "/v1/checkpoints/wf-1", again.json()["position"])
    assert latest.content == compressible


async def _history(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/checkpoints/wf-1/history")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["seq"] for i in items] == [1, 2, 3, 4, 5]
    assert items[0]["label"] == "start" and items[0]["metadata"] == {"step": 1, "node": "plan"}
    assert items[1]["parent_seq"] == 1 and [i["restored_from"] for i in items[3:]] == [1, 2]
    assert all(i["created_by"] == "anonymous" for i in items)
    page = (await client.get("/v1/checkpoints/wf-1/history", params={"after_seq": 3, "limit": 1})).json()
    assert [i["seq"] for i in page["items"]] == [4] and page["next_cursor"] == "4"


async def _refusals(client: httpx.AsyncClient, runtime: Runtime, settings: Settings) -> None:
    before = len(await raw_events(runtime, settings))
    too_large = await client.put("/v1/checkpoints/wf-1", content=random_bytes(6 * MiB + 1), headers=OCTETS)
    assert too_large.status_code == 413 and too_large.json()["code"] == "checkpoint_too_large"
    unknown = await client.post("/v1/checkpoints/wf-1/restore", json={"seq": 99})
    assert unknown.status_code == 409 and unknown.json()["code"] == "unknown_checkpoint"
    nothing = await client.post("/v1/checkpoints/wf-none/restore", json={"seq": 1})
    assert nothing.status_code == 409 and nothing.json()["code"] == "not_found"
    bad_type = await client.put("/v1/checkpoints/wf-1", content=b"x", headers={"Content-Type": "text/plain"})
    assert bad_type.status_code == 415
    bad_meta = await client.put("/v1/checkpoints/wf-1", content=b"x",
                                headers={**OCTETS, "X-Checkpoint-Metadata": "[1]"})
    assert bad_meta.status_code == 422 and bad_meta.json()["code"] == "invalid_metadata"
    assert len(await raw_events(runtime, settings)) == before
    missing = await client.get("/v1/checkpoints/wf-1/99")
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_checkpoint"
    assert (await client.get("/v1/checkpoints/wf-none")).json()["code"] == "checkpoint_not_found"


async def test_a_damaged_blob_is_answered_as_corrupt(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        saved = await save(client, "wf-2", random_bytes(600_000))
        assert saved["blob"]
        assert runtime.pool is not None
        await runtime.pool.execute(f'UPDATE "{settings.blob_schema}".blobs SET data = $2 WHERE sha256 = $1',
                                   saved["sha256"], b"not the bytes")
        response = await read(client, "/v1/checkpoints/wf-2", saved["position"])
        assert response.status_code == 500 and response.json()["code"] == "checkpoint_corrupt"


async def test_the_blob_store_is_idempotent_and_content_addressed(settings: Settings) -> None:
    async with running(settings) as (_, runtime):
        assert runtime.pool is not None
        store = BlobStore(runtime.pool, settings.blob_schema)
        await store.ensure()
        data = text_bytes(100_000)
        encoded = encode(data)
        blob = StoredBlob(encoded.sha256, encoded.size, encoded.encoding, encoded.data)
        key = await store.put(blob)
        assert key == await store.put(blob) == hashlib.sha256(data).hexdigest()
        assert await store.get(key) == blob
        assert await store.get("0" * 64) is None


async def test_a_save_through_post_commands_is_the_same_command(settings: Settings) -> None:
    data = b"hello checkpoint"
    encoded = encode(data)
    payload = {"sha256": encoded.sha256, "size": encoded.size, "encoding": encoded.encoding,
               "stored_size": len(encoded.data), "inline": base64.b64encode(encoded.data).decode()}
    async with running(settings) as (client, _):
        posted = await command(client, "checkpoint.save", "checkpoint:wf-3", payload, command_id="c-1")
        assert posted.status_code == 200, posted.text
        again = await client.put("/v1/checkpoints/wf-3", content=data, headers={**OCTETS, "Idempotency-Key": "c-1"})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["seq"] == 1
        assert (await read(client, "/v1/checkpoints/wf-3", posted.json()["position"])).content == data
        lying = await command(client, "checkpoint.save", "checkpoint:wf-3", {**payload, "size": 3})
        assert lying.status_code == 409 and lying.json()["code"] == "checkpoint_mismatch"
