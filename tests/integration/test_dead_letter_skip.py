"""A skipped dead letter is a decision in the log: the live projector, a rebuild (verify), the command side's
restore and the history all apply it, and the stream takes commands again."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import msgspec
import pytest

from blackboard.config import Settings
from blackboard.connect import read_pool, resolve_dead_letter
from blackboard.events.log import PartitionedLog, StoredRecord
from blackboard.events.partitioner import partition_for
from blackboard.events.skips import skip_of
from blackboard.ops.streams import read_partition
from blackboard.ops.verify import verify
from blackboard.schemas.envelope import Envelope, stream_partition_key
from blackboard.schemas.project import CostAdded, ProjectCreated
from tests.factories import envelope
from tests.integration.harness import command, running
from tests.integration.test_replay import create_project, letters, produce, started_log

STREAM = "project:p-1"


async def until_answered(client: httpx.AsyncClient, amount: str, command_id: str) -> httpx.Response:
    """``add_cost`` retried with the same command id past the answers a retry can help (on Kafka the owner
    learns of a foreign record only when its next append is fenced)."""
    for _ in range(5):
        answer = await command(client, "project.add_cost", STREAM, {"amount": amount, "reason": "render"},
                               command_id=command_id)
        if answer.status_code != 503 or answer.json()["code"] == "stream_unreadable":
            return answer
        await asyncio.sleep(0.1)
    return answer


async def test_a_skip_is_applied_by_every_fold_and_the_stream_takes_commands_again(settings: Settings) -> None:
    assert settings.postgres_url is not None
    url = settings.postgres_url.get_secret_value()
    async with running(settings) as (client, runtime), started_log(settings) as log:
        await create_project(client, "p-1")
        assert (await until_answered(client, "2", "cost-1")).status_code == 200
        garbage = msgspec.structs.replace(
            envelope(CostAdded(Decimal(5), "render"), stream=STREAM, version=3,
                     partition_key=stream_partition_key(STREAM)),
            payload=b'{"amount": "not money"}')
        await produce(log, settings.events_topic, runtime.partitions, garbage)
        for _ in range(100):
            found = await letters(settings, url)
            if found:
                break
            await asyncio.sleep(0.05)
        assert [(d.status, d.stream) for d in found] == [("open", STREAM)]
        refused = await until_answered(client, "1", "cost-2")
        assert refused.status_code == 503 and refused.json()["code"] == "stream_unreadable", refused.text

        outcome = await resolve_dead_letter(settings, url, found[0].id, skip=True, operator="ops",
                                            reason="garbage from a foreign producer")
        assert outcome.skipped == [found[0].id]
        accepted = await until_answered(client, "1", "cost-2")
        assert accepted.status_code == 200 and accepted.json()["version"] == 4, accepted.text
        p1 = (await client.get("/v1/projects/p-1", params={"consistent_with": accepted.json()["position"]})).json()
        assert p1["version"] == 4 and Decimal(p1["budget"]["spent"]) == 3
        history = (await client.get(f"/v1/streams/{STREAM}/history")).json()
        assert [e["version"] for e in history["items"]] == [1, 2, 4]
        state = (await client.get(f"/v1/streams/{STREAM}/state", params={"version": 4})).json()
        assert state["version"] == 4 and Decimal(state["state"]["budget"]["spent"]) == 3
        async with read_pool(settings, url) as pool:
            report = await verify(log, pool, url, settings, timeout=30)
        assert report.equal, [t for t in report.tables if not t.equal]

        skips = [s for rec in await _partition_records(log, settings, runtime.partitions) if (s := skip_of(rec))]
        assert [(s.offset, s.stream, s.stream_version, s.operator) for s in skips] == [
            (found[0].offset, STREAM, 3, "ops")]

    # A restarted owner restores from the log (the skip included) and decides on the stream.
    async with running(settings) as (client, _):
        again = await until_answered(client, "4", "cost-3")
        assert again.status_code == 200 and again.json()["version"] == 5, again.text


async def _partition_records(log: PartitionedLog, settings: Settings, partitions: int) -> list[StoredRecord]:
    partition = partition_for(stream_partition_key(STREAM).encode(), partitions)
    return await read_partition(log, settings.events_topic, partition)


def _history(poisoned: int) -> tuple[list[Envelope], Decimal]:
    """Three records of ``STREAM``, the one at version ``poisoned`` garbage (a payload that does not decode) and
    the others a creation and costs, in that order; and what the valid costs spend."""
    valid: list[msgspec.Struct] = [ProjectCreated("T", "EUR", Decimal(1000), {}), CostAdded(Decimal(2), "render"),
                                   CostAdded(Decimal(5), "render")]
    garbage = {"ProjectCreated": b'{"title": 5}', "CostAdded": b'{"amount": "not money"}'}
    if poisoned == 1:  # the creation itself is garbage; a readable one follows
        valid = [ProjectCreated("T", "EUR", Decimal(0), {}), ProjectCreated("T", "EUR", Decimal(1000), {}),
                 CostAdded(Decimal(5), "render")]
    records, spent = [], Decimal(0)
    for version, event in enumerate(valid, start=1):
        env = envelope(event, stream=STREAM, version=version, partition_key=stream_partition_key(STREAM))
        if version == poisoned:
            env = msgspec.structs.replace(env, payload=garbage[type(event).__name__])
        elif isinstance(event, CostAdded):
            spent += event.amount
        records.append(env)
    return records, spent


@pytest.mark.parametrize("poisoned", [1, 2, 3], ids=["first", "middle", "last"])
async def test_a_poison_record_anywhere_in_a_stream_is_skipped_and_the_stream_written_again(
        settings: Settings, poisoned: int) -> None:
    """The stream's history written by another producer, one record garbage: first, in the middle, last. Once
    skipped, what follows it applies, verify finds the read models equal to a rebuild, and a command is accepted."""
    assert settings.postgres_url is not None
    url = settings.postgres_url.get_secret_value()
    records, spent = _history(poisoned)
    async with running(settings) as (client, runtime), started_log(settings) as log:
        for env in records:
            await produce(log, settings.events_topic, runtime.partitions, env)
        behind = len(records) - poisoned  # the records after the poison, held behind it
        for _ in range(100):
            if len(found := await letters(settings, url)) == 1 + behind:
                break
            await asyncio.sleep(0.05)
        assert [(d.status, d.stream) for d in found] == [("open", STREAM)] + [("held", STREAM)] * behind
        refused = await until_answered(client, "1", "cost-after")
        assert refused.status_code == 503 and refused.json()["code"] == "stream_unreadable", refused.text

        outcome = await resolve_dead_letter(settings, url, found[0].id, skip=True, operator="ops", reason="garbage")
        assert (outcome.skipped, sorted(outcome.applied)) == ([found[0].id], sorted(d.id for d in found[1:])), outcome
        accepted = await until_answered(client, "1", "cost-after")
        assert accepted.status_code == 200 and accepted.json()["version"] == 4, accepted.text
        read = await client.get("/v1/projects/p-1", params={"consistent_with": accepted.json()["position"]})
        assert read.json()["version"] == 4 and Decimal(read.json()["budget"]["spent"]) == spent + 1, read.text
        history = (await client.get(f"/v1/streams/{STREAM}/history")).json()
        assert [e["version"] for e in history["items"]] == [v for v in (1, 2, 3, 4) if v != poisoned]
        async with read_pool(settings, url) as pool:
            report = await verify(log, pool, url, settings, timeout=30)
        assert report.equal, [t for t in report.tables if not t.equal]
