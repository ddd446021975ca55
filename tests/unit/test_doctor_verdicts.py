"""The pure verdicts of ``blackboard doctor``: masking, partition counts, retention, replication, a stuck projection."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from blackboard.config import Settings
from blackboard.ops.doctor import (
    Check,
    StoredOffset,
    mask,
    partition_checks,
    projection_check,
    retention_problems,
    settings_view,
)
from blackboard.ops.replication import Replication, replication_verdict


@pytest.mark.parametrize(("secret", "shown"), [
    ("postgres://user:hunter2@db.example:5432/bb", "postgres://user:***@db.example:5432/bb"),
    ("postgresql+asyncpg://user:p%40ss@h1,h2/db?sslmode=require", "postgresql+asyncpg://user:***@h1,h2/db?***"),
    ("postgres://user@host/db", "postgres://user@host/db"),
    ("redis://:token@cache:6379/0", "redis://:***@cache:6379/0"),
    ("key1=alice:rw,key2=bob:ro", "***"),
    ("", "***"),
])
def test_secrets_are_masked_but_urls_stay_readable(secret: str, shown: str) -> None:
    assert mask(secret) == shown


def test_every_setting_is_listed_and_no_secret_leaks() -> None:
    settings = Settings(postgres_url=SecretStr("postgres://u:pw@h/db"), api_keys=SecretStr("k=p:rw"))
    views = {v.name: v for v in settings_view(settings)}
    assert set(views) == set(Settings.model_fields)
    assert (views["postgres_url"].value, views["postgres_url"].secret) == ("postgres://u:***@h/db", True)
    assert (views["api_keys"].value, views["redis_url"].value) == ("***", None)
    assert views["partitions"].env == "BLACKBOARD_PARTITIONS" and not views["partitions"].secret


def test_partition_counts_follow_the_settings_then_the_events_topic() -> None:
    s = Settings(topic_prefix="x.", partitions=4)
    assert partition_checks(s, {"x.events": 4, "x.commands": 4, "x.command-results": None}) == [
        Check("topic x.events", "ok", "4 partitions"), Check("topic x.commands", "ok", "4 partitions"),
        Check("topic x.command-results", "warn", "does not exist yet (`blackboard up` creates it)")]
    checks = partition_checks(s, {"x.events": 3, "x.commands": 4, "x.command-results": 3})
    assert [c.status for c in checks] == ["fail", "fail", "ok"]
    assert checks[0].detail == "has 3 partitions; BLACKBOARD_PARTITIONS is 4"
    assert checks[1].detail == "has 4 partitions; x.events has 3"


def test_retention_must_keep_every_event() -> None:
    assert retention_problems({"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}) == []
    assert retention_problems({"retention.ms": "604800000", "retention.bytes": "1000",
                               "cleanup.policy": "compact,delete"}) == [
        "retention.ms is 604800000, not -1", "retention.bytes is 1000, not -1",
        "cleanup.policy is compact,delete: compaction drops events"]
    assert retention_problems({}) == ["retention.ms is unset (the broker default), not -1"]


def test_a_projection_is_stuck_only_when_behind_and_still() -> None:
    assert projection_check({0: 5}, {0: StoredOffset(5, 999)}, 60).status == "ok"
    assert projection_check({0: 5}, {0: StoredOffset(2, 10)}, 60) == Check("projection", "ok", "lag 3, moving")
    stuck = projection_check({0: 5, 1: 1}, {0: StoredOffset(2, 61), 1: StoredOffset(1, 999)}, 60)
    assert stuck == Check("projection", "fail", "stuck for over 60 s: partition 0: lag 3, offset stored 61 s ago")
    unseen = projection_check({0: 5, 1: 0}, {}, 60)
    assert unseen.status == "warn" and "partitions [0]" in unseen.detail


def test_replication_is_held_to_the_settings() -> None:
    asked = Replication(3, 2)
    assert replication_verdict(asked, 3, {"min.insync.replicas": "2"}) == ("ok", "3 replica(s), min.insync.replicas 2")
    status, detail = replication_verdict(asked, 1, {"min.insync.replicas": "1"})
    assert status == "fail"
    assert detail == ("replication factor is 1; the settings ask for 3 (BLACKBOARD_KAFKA_REPLICATION_FACTOR); "
                      "min.insync.replicas is 1; the settings ask for 2 (BLACKBOARD_KAFKA_MIN_INSYNC_REPLICAS)")
    assert replication_verdict(asked, 3, {})[0] == "fail", "unset: the broker's default of 1 is weaker"
    assert replication_verdict(Replication(1, 1), 3, {"min.insync.replicas": "1"}) == (
        "warn", "replication factor is 3; the settings ask for 1 (BLACKBOARD_KAFKA_REPLICATION_FACTOR)")
    assert replication_verdict(Replication(1, 1), 1, {"min.insync.replicas": "1"})[0] == "ok"
    assert replication_verdict(asked, None, None) == ("warn", "the broker cannot tell the topic's replication")
