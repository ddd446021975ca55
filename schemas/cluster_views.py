"""What the query API answers about the agent cluster: nodes, task statistics, sagas."""

from __future__ import annotations

from datetime import datetime

import msgspec


class NodeView(msgspec.Struct, frozen=True):
    """A node; ``active`` counts the tasks it holds (claimed or running), ``available`` the capacity left."""

    id: str
    hostname: str
    platform: str
    skills: list[str]
    capacity: int
    status: str
    reported_status: str
    load: int
    ttl_seconds: int
    last_seen: datetime
    active: int
    available: int
    version: int
    created_at: datetime
    updated_at: datetime


class NodeList(msgspec.Struct, frozen=True):
    items: list[NodeView]


class Throughput(msgspec.Struct, frozen=True):
    window_seconds: int
    succeeded: int
    failed: int
    cancelled: int
    per_minute: float


class TaskStats(msgspec.Struct, frozen=True):
    """Counts of tasks by status, by type and by the node holding them, and what finished in the window."""

    total: int
    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    by_node: dict[str, dict[str, int]]
    throughput: Throughput


class SagaView(msgspec.Struct, frozen=True):
    id: str
    project_id: str
    status: str
    steps: list[str]
    reason: str
    deadline: datetime
    version: int
    created_at: datetime
    updated_at: datetime
