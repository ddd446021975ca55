"""The process managers fold what their process appended as it is handed over in memory, what other writers
appended from the log, each event once and in its partition's order; a restart folds it all from the log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from blackboard.events.codec import fenced, to_record
from blackboard.events.postgres import PostgresLog
from blackboard.processes.manager import Intent, Seen
from blackboard.processes.runtime import Appended, ProcessRuntime
from blackboard.schemas.api import Outcome
from blackboard.schemas.clock import Ticked
from blackboard.schemas.envelope import Envelope, stream_partition_key
from blackboard.schemas.registry import encode_payload

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder:
    """Remembers every tick it is fed, in order."""

    name = "recorder"

    def initial(self) -> list[tuple[str, datetime]]:
        return []

    def handle(self, state: list[tuple[str, datetime]], seen: Seen) -> tuple[Any, list[Intent]]:
        state.append((seen.stream, seen.event.at))
        return state, []

    def pending(self, state: Any) -> list[Intent]:
        return []

    def due(self, state: Any) -> datetime | None:
        return None

    def rejected(self, state: Any, sent: Intent, code: str) -> list[Intent]:
        return []


def _ticks(stream: str, minutes: Sequence[int]) -> list[Envelope]:
    return [Envelope(event_id=str(uuid.uuid4()), stream=stream, stream_version=m + 1, type="clock.ticked",
                     schema_version=1, occurred_at=T0, command_id=f"c-{m}", correlation_id=f"c-{m}",
                     causation_id=f"c-{m}", actor="test", writer_epoch=1, partition_key=stream_partition_key(stream),
                     payload=encode_payload(Ticked(T0 + timedelta(minutes=m))))
            for m in minutes]


async def _append(log: PostgresLog, topic: str, partition: int, envelopes: list[Envelope]) -> int:
    at = await log.end_offset(topic, partition)
    return await log.append(topic, partition, fenced([to_record(e) for e in envelopes], at), expected_offset=at)


async def _until(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached")


async def test_appended_events_are_folded_in_memory_others_from_the_log_and_a_restart_reads_all(
        pg_url: str, topic_prefix: str) -> None:
    log = PostgresLog(pg_url, schema="log_" + topic_prefix.strip(".").lower())
    await log.start()
    topic = f"{topic_prefix}events"
    await log.create_topic(topic, 2)

    async def send(_: Intent) -> Outcome:
        raise AssertionError("nothing is sent")

    appended = Appended(topic)
    runtime = ProcessRuntime(log, topic=topic, managers=[Recorder()], send=send, appended=appended)
    # Caught up on an empty log, the runtime takes one turn at a time here (``run`` loops over the same turn).
    reader = log.reader(topic)
    for p in (0, 1):
        await reader.seek(p, 0)
        runtime.positions[p] = runtime._reader_at[p] = 0
    runtime.caught_up = True
    try:
        # Ours, handed over; another writer's, not; ours again, handed over past it: read from the log first.
        ours = _ticks("clock:a", [0, 1])
        appended.put(topic, 0, await _append(log, topic, 0, ours), ours)
        await _append(log, topic, 0, _ticks("clock:a", [2]))
        later = _ticks("clock:a", [3])
        appended.put(topic, 0, await _append(log, topic, 0, later), later)
        # A batch handed over twice changes nothing; nor does another topic's.
        appended.put(topic, 0, 0, ours)
        appended.put(f"{topic_prefix}other", 0, 9, ours)
        # A partition only another writer appends to is read from the log.
        await _append(log, topic, 1, _ticks("clock:b", [4]))
        _, came = await runtime._take_appended(reader)
        minutes = [(s, int((at - T0).total_seconds() // 60)) for s, at in runtime.states["recorder"]]
        assert sorted(minutes) == [("clock:a", 0), ("clock:a", 1), ("clock:a", 2), ("clock:a", 3), ("clock:b", 4)]
        assert [m for s, m in minutes if s == "clock:a"] == [0, 1, 2, 3]
        # The first batch from memory; the gap's read from the log brought the rest, the handed-over copy of
        # which was passed over.
        assert (runtime.handed_over, runtime.read, came) == (2, 3, 5)
        assert runtime.positions == {0: 4, 1: 1}
        # Ours again, now at the managers' position: from memory, and the reader is moved on past it.
        last = _ticks("clock:a", [5])
        appended.put(topic, 0, await _append(log, topic, 0, last), last)
        runtime._read_at = 0.0  # a read of the log is due: it finds nothing it has not folded
        await runtime._take_appended(reader)
        assert (runtime.handed_over, runtime.read, runtime.positions) == (3, 3, {0: 5, 1: 1})
    finally:
        await reader.close()

    # A restart (nothing handed over) rebuilds the same state from the log alone.
    again = ProcessRuntime(log, topic=topic, managers=[Recorder()], send=send, appended=Appended(topic))
    task = asyncio.create_task(again.run())
    try:
        await _until(lambda: again.caught_up and len(again.states["recorder"]) == 6)
        assert again.states["recorder"] == runtime.states["recorder"] or sorted(again.states["recorder"]) == sorted(
            runtime.states["recorder"])
        assert (again.handed_over, again.read) == (0, 6)
        # Caught up, what it is handed is folded from memory by its loop.
        more = _ticks("clock:b", [6])
        again.appended.put(topic, 1, await _append(log, topic, 1, more), more)  # type: ignore[union-attr]
        await _until(lambda: len(again.states["recorder"]) == 7)
        await asyncio.sleep(0.1)
        assert again.handed_over + again.read == 7 and len(again.states["recorder"]) == 7
    finally:
        await again.stop()
        await asyncio.gather(task, return_exceptions=True)
        await log.close()


def test_batches_nobody_takes_are_forgotten_beyond_the_bound() -> None:
    appended = Appended("events", held=3)
    appended.put("events", 0, 0, _ticks("clock:a", [0, 1]))
    appended.put("events", 0, 2, _ticks("clock:a", [2]))
    appended.put("events", 0, 3, _ticks("clock:a", [3]))  # beyond 3 events held: the first two batches go
    assert appended.forgotten == 2
    taken = asyncio.run(appended.take(0))
    assert [(p, base, len(envs)) for p, base, envs in taken] == [(0, 3, 1)]
