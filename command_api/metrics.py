"""Prometheus metrics of the command side."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

COMMANDS = Counter("blackboard_commands_total", "Commands decided, by type, outcome and tenant",
                   ["type", "outcome", "tenant"])
GROUP_SIZE = Histogram("blackboard_command_group_size", "Commands decided and appended together",
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
DECIDE_SECONDS = Histogram("blackboard_decide_seconds", "Time to decide one group of commands",
                           buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1))
APPEND_SECONDS = Histogram("blackboard_append_seconds", "Time the log took to acknowledge one group's batch",
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
# Alerting: sum(OWNED_PARTITIONS) over the deciders below max(PARTITIONS) means partitions nobody decides.
PARTITIONS = Gauge("blackboard_decider_partitions",
                   "Partitions of the commands topic: the most deciders that can share the work")
OWNED_PARTITIONS = Gauge("blackboard_decider_owned_partitions", "Partitions this process decides now")
RESTORES = Counter("blackboard_decider_restores_total",
                   "Partition owners rebuilt, by where they started: a snapshot, or the log's first offset", ["source"])
DEAD_LETTERS = Counter("blackboard_command_dead_letters_total",
                       "Records of the commands topic that were not commands, set aside on its dead-letter topic")
# A writer that believed it owned a partition another writer had appended to: never acknowledged, counted here.
FENCED_WRITES = Counter("blackboard_fenced_writes_total",
                        "Writes to the events topic refused by the fence (another writer appended first), by partition",
                        ["partition"])
# Commands a caller stopped waiting for (BLACKBOARD_COMMAND_TIMEOUT_SECONDS): still queued, decided at most once.
OUTCOMES_PENDING = Counter("blackboard_command_outcomes_pending_total",
                           "Commands answered 503 outcome_pending: not decided within the command timeout")
