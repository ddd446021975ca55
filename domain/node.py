"""The node decider: stream ``node:<id>``; registration, coalesced heartbeats, offline on expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from blackboard.domain.decider import Context, Rejection
from blackboard.schemas.node import (
    DeregisterNode,
    ExpireNode,
    Heartbeat,
    HeartbeatRecorded,
    NodeCameOnline,
    NodeCommand,
    NodeDeregistered,
    NodeEvent,
    NodeRegistered,
    NodeWentOffline,
    RegisterNode,
)

CATEGORY = "node"
#: A heartbeat that says nothing new is recorded once this fraction of the TTL has passed since the last.
RECORD_EVERY = 0.25


class Node(msgspec.Struct, frozen=True):
    hostname: str
    platform: str
    skills: list[str]
    capacity: int
    ttl_seconds: int
    #: ``online``, ``offline`` (its heartbeats stopped) or ``deregistered``.
    status: str
    #: The last recorded heartbeat (or registration): the node is offline once it is older than the TTL.
    last_seen: datetime
    reported_status: str = "idle"
    load: int = 0


initial_state: Node | None = None


def evolve(state: Node | None, event: NodeEvent) -> Node | None:
    replace = msgspec.structs.replace
    match event:
        case NodeRegistered() as e:
            return Node(e.hostname, e.platform, list(e.skills), e.capacity, e.ttl_seconds, "online", e.at,
                        state.reported_status if state else "idle", state.load if state else 0)
    if state is None:
        return None
    match event:
        case HeartbeatRecorded() as beat:
            return replace(state, reported_status=beat.status, load=beat.load, last_seen=beat.at)
        case NodeCameOnline() as back:
            return replace(state, status="online", last_seen=back.at)
        case NodeWentOffline():
            return replace(state, status="offline")
        case NodeDeregistered():
            return replace(state, status="deregistered")
    return state


def decide(state: Node | None, command: NodeCommand, ctx: Context) -> list[NodeEvent] | Rejection:
    if isinstance(command, RegisterNode):
        return [NodeRegistered(command.hostname, command.platform, list(command.skills), command.capacity,
                               command.ttl_seconds, ctx.now)]
    if state is None:
        return Rejection("not_found", "the node is not registered; send node.register first")
    match command:
        case Heartbeat():
            return _heartbeat(state, command, ctx)
        case DeregisterNode():
            return [] if state.status == "deregistered" else [NodeDeregistered(ctx.now)]
        case ExpireNode():
            if state.status != "online":
                return []
            silent_until = state.last_seen + timedelta(seconds=state.ttl_seconds)
            if not ctx.require("no heartbeat was recorded for the TTL", silent_until <= command.at):
                return Rejection("node_alive", f"the node was seen at {state.last_seen.isoformat()}",
                                 {"last_seen": state.last_seen.isoformat()})
            return [NodeWentOffline(command.at, state.last_seen)]
    raise AssertionError(f"unhandled node command {type(command).__name__}")


def _heartbeat(state: Node, c: Heartbeat, ctx: Context) -> list[NodeEvent] | Rejection:
    """Record the heartbeat only when it says something new, or the last recorded is ``RECORD_EVERY`` TTL old."""
    if not ctx.require("the node has not deregistered", state.status != "deregistered"):
        return Rejection("node_deregistered", "the node deregistered; register it again first")
    events: list[NodeEvent] = []
    if state.status == "offline":
        events.append(NodeCameOnline(ctx.now))
    due = ctx.now - state.last_seen >= timedelta(seconds=state.ttl_seconds * RECORD_EVERY)
    if events or due or (c.status, c.load) != (state.reported_status, state.load):
        events.append(HeartbeatRecorded(c.status, c.load, ctx.now))
    return events
