"""Topics are created with the replication the settings ask for, or the safe default the cluster allows."""

from __future__ import annotations

import uuid

from blackboard.events.kafka.log import MAX_MESSAGE_BYTES, KafkaLog


async def test_one_broker_gets_one_replica_and_room_for_a_group_commit(kafka_bootstrap: str) -> None:
    log = KafkaLog(kafka_bootstrap)
    await log.start()
    try:
        assert await log.replication() == (1, 1)  # the default asks for 3, the cluster has 1 broker
        topic = f"t{uuid.uuid4().hex[:8]}.events"
        await log.create_topic(topic, 2, config={"retention.ms": "-1"})
        config = (await log.describe_topic(topic)).config
        assert config is not None
        assert config["max.message.bytes"] == str(MAX_MESSAGE_BYTES)
        assert config["min.insync.replicas"] == "1" and config["retention.ms"] == "-1"
    finally:
        await log.close()


async def test_set_replication_is_asked_for_as_set(kafka_bootstrap: str) -> None:
    """Note: tansu keeps data in its storage engine, not in replicas, and accepts any factor; a real
    cluster refuses more replicas than brokers, which create_topic reports as LogUnavailable."""
    log = KafkaLog(kafka_bootstrap, replication_factor=3, min_insync_replicas=2)
    await log.start()
    try:
        assert await log.replication() == (3, 2)
        topic = f"t{uuid.uuid4().hex[:8]}.events"
        await log.create_topic(topic, 2)
        config = (await log.describe_topic(topic)).config
        assert config is not None and config["min.insync.replicas"] == "2"
    finally:
        await log.close()
