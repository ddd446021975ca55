"""A partition owner's idempotency memory stays within its bounds (count and bytes), forgets the oldest first,
holds after a restore what the live owner held, and shows how full it is in GET /v1/partitions and the metrics."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
from prometheus_client import generate_latest

from blackboard.command_api.known import KEEP_AT_LEAST
from blackboard.command_api.owner import PartitionOwner, submission
from blackboard.command_api.restore import restore_owner
from blackboard.config import Settings
from blackboard.domain.decoding import validate_command
from blackboard.events.log import PartitionedLog
from blackboard.schemas.api import Accepted
from tests.integration.harness import command, running
from tests.integration.test_restore import Topics, new_owner, topics, writer  # noqa: F401  (fixtures)

MAX = KEEP_AT_LEAST + 20


async def create_docs(owner: PartitionOwner, count: int) -> list[str]:
    """``count`` accepted ``doc.create`` commands, sent together (a few group commits); their ids in order."""
    ids, subs = [], []
    for i in range(count):
        cid = f"c-{i:04d}-{uuid.uuid4().hex[:6]}"
        body = {"type": "doc.create", "stream": f"doc:notes.n-{i}", "command_id": cid, "payload": {"body": {"i": i}}}
        valid = validate_command(msgspec.json.encode(body))
        subs.append(submission(valid.request, valid.payload, actor="alice", fingerprint=valid.fingerprint))
        ids.append(cid)
    for sub in subs:
        await owner.queue.put(sub)
    outcomes = await asyncio.gather(*(s.future for s in subs))
    assert all(isinstance(o, Accepted) for o, _ in outcomes)
    return ids


async def test_the_memory_forgets_the_oldest_beyond_its_bounds_and_a_restore_holds_the_same(
        log: PartitionedLog, topics: Topics, writer: PartitionOwner) -> None:  # noqa: F811
    writer.known.bound(max_count=MAX, max_bytes=64 * 1_048_576)
    ids = await create_docs(writer, MAX + 40)
    assert len(writer.known) == MAX and writer.known.evicted == 40
    assert list(writer.known) == ids[40:]
    assert 0 < writer.known.bytes < 64 * 1_048_576

    # An owner restored from the whole log, under the same bounds, remembers the same commands.
    again = new_owner(log, topics)
    again.known.bound(max_count=MAX, max_bytes=64 * 1_048_576)
    await restore_owner(log, again, events_topic=topics.events, results_topic=topics.results, snapshots_topic=None)
    assert again.known == writer.known and again.known.bytes == writer.known.bytes

    # The byte bound: down to the newest KEEP_AT_LEAST, whatever their size.
    writer.known.bound(max_count=MAX, max_bytes=1)
    assert list(writer.known) == ids[-KEEP_AT_LEAST:]
    scraped = generate_latest().decode()
    assert f'blackboard_idempotency_commands{{partition="0"}} {float(KEEP_AT_LEAST)}' in scraped
    assert 'blackboard_idempotency_evictions_total{partition="0"}' in scraped


async def test_partitions_show_how_full_each_memory_is(pg_url: str, topic_prefix: str) -> None:
    settings = Settings.model_validate({"postgres_url": pg_url, "topic_prefix": topic_prefix, "partitions": 1,
                                        "known_max_commands": KEEP_AT_LEAST, "known_max_bytes": 2 * 1_048_576})
    async with running(settings) as (client, _):
        answer = await command(client, "doc.create", "doc:notes.a", {"body": {"a": 1}})
        assert answer.status_code == 200, answer.text
        report = (await client.get("/v1/partitions")).json()
    memory = report["partitions"][0]["idempotency"]
    assert memory["commands"] == 1 and memory["evicted"] == 0 and memory["bytes"] > 0
    assert (memory["max_commands"], memory["max_bytes"]) == (KEEP_AT_LEAST, 2 * 1_048_576)
