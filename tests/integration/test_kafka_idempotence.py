"""The idempotent producer as ``BLACKBOARD_KAFKA_IDEMPOTENCE`` asks, against tansu, which refuses it."""

from __future__ import annotations

import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from blackboard.config import Settings
from blackboard.events.kafka.idempotence import IdempotenceRefused, start_producer
from blackboard.events.kafka.log import KafkaLog
from blackboard.events.log import Record
from blackboard.startup import wait_for_dependencies


async def test_auto_falls_back_to_the_plain_producer_in_one_line(kafka_bootstrap: str) -> None:
    log = KafkaLog(kafka_bootstrap, idempotence="auto")
    with capture_logs() as lines:
        await log.start()
    try:
        assert not log.idempotent
        said = [line for line in lines if line["event"] == "kafka_idempotence_off"]
        assert len(said) == 1 and said[0]["setting"] == "BLACKBOARD_KAFKA_IDEMPOTENCE", lines
        topic = f"t{uuid.uuid4().hex[:8]}.events"
        await log.create_topic(topic, 1)
        assert await log.append(topic, 0, [Record(b"k", b"v")], expected_offset=0) == 0
        assert await log.end_offset(topic, 0) == 1
    finally:
        await log.close()


async def test_off_starts_quietly(kafka_bootstrap: str) -> None:
    log = KafkaLog(kafka_bootstrap, idempotence="off")
    with capture_logs() as lines:
        await log.start()
    await log.close()
    assert not log.idempotent and not [line for line in lines if line["event"] == "kafka_idempotence_off"]


async def test_on_refuses_to_start_naming_the_setting(kafka_bootstrap: str) -> None:
    log = KafkaLog(kafka_bootstrap, idempotence="on")
    with pytest.raises(IdempotenceRefused, match="BLACKBOARD_KAFKA_IDEMPOTENCE"):
        await log.start()
    await log.close()


async def test_a_role_asking_for_it_stops_at_once_instead_of_waiting(kafka_bootstrap: str, pg_url: str) -> None:
    """Not a dependency still coming up: waiting the start-up deadline out would not help."""
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_idempotence="on",
                        startup_timeout_seconds=60)
    began = time.monotonic()
    with pytest.raises(IdempotenceRefused, match="BLACKBOARD_KAFKA_IDEMPOTENCE"):
        await wait_for_dependencies(settings, pg_url, only=frozenset({"kafka"}))
    assert time.monotonic() - began < 20


async def test_auto_asks_a_broker_that_refused_only_once_per_process(kafka_bootstrap: str) -> None:
    """A refused idempotent start can leave one of aiokafka's connections behind, so it is not repeated."""
    asked: list[bool] = []

    def make(idempotent: bool) -> AIOKafkaProducer:
        asked.append(idempotent)
        return AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=idempotent)

    for _ in range(2):
        with capture_logs() as lines:
            producer, idempotent = await start_producer(make, "auto", where=kafka_bootstrap)
        await producer.stop()
        assert not idempotent and [line["event"] for line in lines].count("kafka_idempotence_off") == 1
    assert asked.count(True) <= 1 and asked[-1] is False and asked.count(False) == 2
