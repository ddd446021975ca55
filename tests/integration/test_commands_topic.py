"""A command written straight onto the commands topic gets the same validation, idempotency and outcome as
one sent over HTTP; a record that is no command is answered with a rejection, set aside with its reason,
and the partition goes on."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
import msgspec
from aiokafka import AIOKafkaProducer

from blackboard.app import Runtime
from blackboard.config import Settings
from blackboard.events.log import Record, StoredRecord, read_at
from blackboard.events.partitioner import partition_for
from tests.integration.harness import command, running


async def produce(settings: Settings, runtime: Runtime, key: bytes | None, value: bytes) -> int:
    """Write one record onto the commands topic as a foreign producer would: a plain aiokafka producer on
    Kafka (the default partitioner: murmur2 of the key), an append to the log table on PostgreSQL."""
    partition = partition_for(key, runtime.partitions) if key else 0
    if settings.kafka_bootstrap_servers:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
        await producer.start()
        try:
            sent = await producer.send_and_wait(settings.commands_topic, value, key=key)
        finally:
            await producer.stop()
        assert sent.partition == partition, "aiokafka's default partitioner and Blackboard's must agree"
        return partition
    assert runtime.log is not None
    await runtime.log.append(settings.commands_topic, partition, [Record(key=key, value=value)])
    return partition


async def outcome(client: httpx.AsyncClient, command_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/v1/commands/{command_id}")
        if r.status_code == 200:
            answer: dict[str, Any] = r.json()
            return answer
        assert r.status_code in (202, 404), r.text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{command_id} got no outcome")


def body(command_id: str, amount: str, **extra: Any) -> bytes:
    return msgspec.json.encode({"type": "project.add_cost", "stream": "project:p-1", "command_id": command_id,
                                "payload": {"amount": amount, "reason": "from kafka"}, **extra})


async def test_commands_on_the_topic_get_outcomes_and_bad_records_are_set_aside(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        created = await command(client, "project.create", "project:p-1",
                                {"title": "t", "currency": "EUR", "budget_total": "10.00"})
        assert created.status_code == 200
        key = b"p-1"
        await produce(settings, runtime, key, body("k-1", "4.00"))
        await produce(settings, runtime, key, b"{not json")                      # malformed
        await produce(settings, runtime, key, msgspec.json.encode(               # valid JSON, not a command
            {"type": "project.add_cost", "stream": "project:p-1", "command_id": "k-bad", "payload": {}}))
        await produce(settings, runtime, key, body("k-2", "4.00"))
        await produce(settings, runtime, key, body("k-3", "4.00"))                # over budget
        await produce(settings, runtime, key, body("k-1", "4.00"))                # a repeat: decided once

        first = await outcome(client, "k-1")
        assert first["outcome"] == "accepted" and first["stream"] == "project:p-1"
        assert (await outcome(client, "k-2"))["outcome"] == "accepted"
        over = await outcome(client, "k-3")
        assert over["outcome"] == "rejected" and over["code"] == "budget_exceeded"
        bad = await outcome(client, "k-bad")
        assert bad["outcome"] == "rejected" and bad["code"] == "invalid_command"
        assert any(e["path"].startswith("$.payload") for e in bad["details"]["errors"])

        # The same command over HTTP answers the first outcome again; the same id for another command is refused.
        again = await client.post("/v1/commands", content=body("k-1", "4.00"),
                                  headers={"content-type": "application/json"})
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json()["position"] == first["position"]
        other = await client.post("/v1/commands", content=body("k-1", "5.00"),
                                  headers={"content-type": "application/json"})
        assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"

        doc = (await client.get("/v1/projects/p-1", params={"consistent_with": first["position"]})).json()
        deadline = time.monotonic() + 10
        while Decimal(doc["budget"]["spent"]) != Decimal("8.00") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            doc = (await client.get("/v1/projects/p-1")).json()
        assert Decimal(doc["budget"]["spent"]) == Decimal("8.00")

        # Both bad records are kept with their reasons, where they were and what they said.
        assert runtime.log is not None
        partition = partition_for(key, runtime.partitions)
        letters = await _all(runtime, settings.commands_dead_letters_topic, partition)
        reasons = {dict(r.headers)["code"]: r for r in letters}
        assert set(reasons) == {b"malformed_json", b"invalid_command"}
        assert reasons[b"malformed_json"].value == b"{not json"
        assert dict(reasons[b"malformed_json"].headers)["source_offset"] == b"1"
        parts = (await client.get("/v1/partitions")).json()
        assert parts["set_aside"] == 2
        state = next(p for p in parts["partitions"] if p["partition"] == partition)
        assert state["commands_offset"] == 6


async def test_a_record_on_the_wrong_partition_is_refused_not_decided(settings: Settings) -> None:
    async with running(settings) as (client, runtime):
        created = await command(client, "project.create", "project:p-1",
                                {"title": "t", "currency": "EUR", "budget_total": "10.00"})
        assert created.status_code == 200
        right = partition_for(b"p-1", runtime.partitions)
        wrong = (right + 1) % runtime.partitions
        assert runtime.log is not None
        await runtime.log.append(settings.commands_topic, wrong, [Record(key=b"p-1", value=body("w-1", "1.00"))])
        answer = await outcome(client, "w-1")
        assert answer["outcome"] == "rejected" and answer["code"] == "wrong_partition"
        assert answer["details"] == {"partition": right}
        project = (await client.get("/v1/projects/p-1", params={"consistent_with": created.json()["position"]})).json()
        assert project["version"] == 1


async def _all(runtime: Runtime, topic: str, partition: int) -> list[StoredRecord]:
    assert runtime.log is not None
    end = await runtime.log.end_offset(topic, partition)
    found = await read_at(runtime.log, topic, [(partition, o) for o in range(end)])
    return [found[(partition, o)] for o in range(end)]
