"""Node (worker) commands and events: registration, heartbeats, going offline.

Heartbeats are frequent and mostly say "still here": the decider records one only when it tells
something new (the node came back, its reported status or load changed) or when the last recorded
one is a quarter of the node's TTL old. The rest are answered and forgotten, so the audit trail
holds at most about four heartbeats per TTL per node, and every transition they cause
(online → offline) is an ordinary event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from blackboard.schemas.types import ShortText, Skill

NodeTtl = Annotated[int, msgspec.Meta(ge=1, le=3600, description="seconds, 1 to 3600")]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
Load = Annotated[int, msgspec.Meta(ge=0, le=100_000)]
ReportedStatus = Literal["idle", "busy", "draining"]


class RegisterNode(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``node.register``: a worker announces itself (again: its description is replaced, and it is online)."""

    hostname: ShortText
    platform: Annotated[str, msgspec.Meta(max_length=200)] = ""
    skills: Annotated[list[Skill], msgspec.Meta(max_length=256)] = []
    capacity: Capacity = 1
    #: Silence after which the node is offline and its claimed tasks go back to pending.
    ttl_seconds: NodeTtl = 30


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``node.heartbeat``: still alive, with what the node says of itself."""

    status: ReportedStatus = "idle"
    load: Load = 0


class DeregisterNode(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``node.deregister``: the node leaves; its claimed tasks go back to pending."""


class ExpireNode(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``node.expire``: no heartbeat was recorded for the node's TTL before ``at`` (a clock tick of the log)."""

    at: datetime


class NodeRegistered(msgspec.Struct, frozen=True):
    hostname: str
    platform: str
    skills: list[str]
    capacity: int
    ttl_seconds: int
    at: datetime


class HeartbeatRecorded(msgspec.Struct, frozen=True):
    status: str
    load: int
    at: datetime


class NodeCameOnline(msgspec.Struct, frozen=True):
    at: datetime


class NodeWentOffline(msgspec.Struct, frozen=True):
    at: datetime
    last_seen: datetime


class NodeDeregistered(msgspec.Struct, frozen=True):
    at: datetime


NodeCommand = RegisterNode | Heartbeat | DeregisterNode | ExpireNode
NodeEvent = NodeRegistered | HeartbeatRecorded | NodeCameOnline | NodeWentOffline | NodeDeregistered

SYSTEM_COMMANDS = frozenset({"node.expire"})
