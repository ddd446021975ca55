"""The agent cluster's process managers: claim expiry, nodes going offline, dependencies released."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from blackboard.processes.manager import Intent, Seen, intent
from blackboard.schemas import node as n
from blackboard.schemas import task as t
from blackboard.schemas.clock import Ticked

#: Task events after which no node holds the task.
_ENDS_CLAIM = (t.TaskSucceeded, t.AttemptFailed, t.TaskCancelled)


def _iso(at: datetime) -> str:
    return at.isoformat()


# ── claims whose lease ran out ───────────────────────────────────────────────────────────


@dataclass(slots=True)
class Leases:
    #: task id → (token, lease end) of every claim in force.
    claims: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    last_tick: datetime | None = None


class LeaseExpiry:
    """A claim whose lease ends without progress is expired at the first tick after its end.

    The task then goes back to ``pending`` (or fails after its last attempt): the task decider
    decides that, from the tick's time carried in the command.
    """

    name = "lease-expiry"

    def initial(self) -> Leases:
        return Leases()

    def handle(self, state: Leases, seen: Seen) -> tuple[Leases, list[Intent]]:
        e = seen.event
        match e:
            case t.TaskClaimed():
                state.claims[seen.ident] = (e.token, e.expires_at)
            case t.TaskStarted() | t.TaskProgressed() if seen.ident in state.claims:
                state.claims[seen.ident] = (e.token, e.expires_at)
            case t.TaskStatusChanged(to_status=to) if to not in t.HELD:
                state.claims.pop(seen.ident, None)
            case _ if isinstance(e, _ENDS_CLAIM):
                state.claims.pop(seen.ident, None)
            case Ticked(at=at):
                state.last_tick = at
                return state, self._expired(state, seen)
        return state, []

    def _expired(self, state: Leases, cause: Seen | None) -> list[Intent]:
        at = state.last_tick
        if at is None:
            return []
        return [intent(self.name, f"task:{task_id}", "task.expire_claim", {"token": token, "at": _iso(at)}, cause)
                for task_id, (token, ends) in sorted(state.claims.items()) if ends <= at]

    def pending(self, state: Leases) -> list[Intent]:
        return self._expired(state, None)

    def due(self, state: Leases) -> datetime | None:
        return min((ends for _, ends in state.claims.values()), default=None)

    def rejected(self, state: Leases, sent: Intent, code: str) -> list[Intent]:
        return []


# ── nodes whose heartbeats stopped ───────────────────────────────────────────────────────


@dataclass(slots=True)
class Nodes:
    #: node id → (online, last recorded heartbeat, ttl seconds).
    nodes: dict[str, tuple[bool, datetime, int]] = field(default_factory=dict)
    #: task id → (node, token) of every claim in force.
    held: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: node id → why it is gone ("node_offline", "node_deregistered"), while it is.
    gone: dict[str, str] = field(default_factory=dict)
    last_tick: datetime | None = None


class NodeLiveness:
    """A node with no heartbeat recorded for its TTL goes offline at the next tick; the tasks held by a
    node that went offline or deregistered are released (back to pending, or failed after their last attempt)."""

    name = "node-liveness"

    def initial(self) -> Nodes:
        return Nodes()

    def handle(self, state: Nodes, seen: Seen) -> tuple[Nodes, list[Intent]]:
        e, ident = seen.event, seen.ident
        match e:
            case n.NodeRegistered():
                state.nodes[ident] = (True, e.at, e.ttl_seconds)
                state.gone.pop(ident, None)
            case n.HeartbeatRecorded() | n.NodeCameOnline() if ident in state.nodes:
                state.nodes[ident] = (True, e.at, state.nodes[ident][2])
                state.gone.pop(ident, None)
            case n.NodeWentOffline() | n.NodeDeregistered() if ident in state.nodes:
                _, seen_at, ttl = state.nodes[ident]
                state.nodes[ident] = (False, seen_at, ttl)
                state.gone[ident] = "node_offline" if isinstance(e, n.NodeWentOffline) else "node_deregistered"
                return state, self._releases(state, ident, seen)
            case t.TaskClaimed():
                state.held[ident] = (e.node, e.token)
                if e.node in state.gone:  # claimed by a node already gone (it raced its own expiry)
                    return state, [self._release(ident, e.token, state.gone[e.node], seen)]
            case t.TaskStatusChanged(to_status=to) if to not in t.HELD:
                state.held.pop(ident, None)
            case _ if isinstance(e, _ENDS_CLAIM):
                state.held.pop(ident, None)
            case Ticked(at=at):
                state.last_tick = at
                return state, self._silent(state, seen)
        return state, []

    def _silent(self, state: Nodes, cause: Seen | None) -> list[Intent]:
        at = state.last_tick
        if at is None:
            return []
        return [intent(self.name, f"node:{node}", "node.expire", {"at": _iso(at)}, cause)
                for node, (online, seen_at, ttl) in sorted(state.nodes.items())
                if online and (at - seen_at).total_seconds() >= ttl]

    def _releases(self, state: Nodes, node: str, cause: Seen | None) -> list[Intent]:
        return [self._release(task_id, token, state.gone[node], cause)
                for task_id, (holder, token) in sorted(state.held.items()) if holder == node]

    def _release(self, task_id: str, token: int, reason: str, cause: Seen | None) -> Intent:
        return intent(self.name, f"task:{task_id}", "task.release_claim", {"token": token, "reason": reason}, cause)

    def pending(self, state: Nodes) -> list[Intent]:
        releases = [i for node in sorted(state.gone) for i in self._releases(state, node, None)]
        return [*self._silent(state, None), *releases]

    def due(self, state: Nodes) -> datetime | None:
        return min((seen_at + timedelta(seconds=ttl) for online, seen_at, ttl in state.nodes.values() if online),
                   default=None)

    def rejected(self, state: Nodes, sent: Intent, code: str) -> list[Intent]:
        return []


# ── dependencies ─────────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class Graph:
    #: task id → status as the log says, for every task seen.
    status: dict[str, str] = field(default_factory=dict)
    #: task id → its dependencies, for tasks still ``blocked``.
    waiting: dict[str, list[str]] = field(default_factory=dict)
    #: dependency → the blocked tasks waiting for it.
    dependants: dict[str, set[str]] = field(default_factory=dict)


_ENDED_BADLY = frozenset({"failed", "cancelled"})


class Dependencies:
    """A blocked task is unblocked once every dependency succeeded; when a dependency fails or is
    cancelled, ``task.fail_dependency`` goes to each task waiting for it (whose own rule,
    ``on_dependency_failure``, says whether it fails too or keeps waiting for a retry)."""

    name = "dependencies"

    def initial(self) -> Graph:
        return Graph()

    def handle(self, state: Graph, seen: Seen) -> tuple[Graph, list[Intent]]:
        e, ident = seen.event, seen.ident
        before = state.status.get(ident)
        match e:
            case t.TaskCreated():
                state.status[ident] = "blocked" if e.depends_on else "pending"
                if e.depends_on:
                    state.waiting[ident] = list(e.depends_on)
                    for dep in e.depends_on:
                        state.dependants.setdefault(dep, set()).add(ident)
                    return state, self._verdict(state, ident, seen)
                return state, []
            case t.TaskStatusChanged(to_status=to):
                state.status[ident] = to
            case t.TaskSucceeded():
                state.status[ident] = "succeeded"
            case t.AttemptFailed(final=final):
                state.status[ident] = "failed" if final else "pending"
            case t.TaskCancelled():
                state.status[ident] = "cancelled"
            case t.DependencyFailed():
                state.status[ident] = "failed"
            case t.TaskRetried():
                state.status[ident] = "pending"
            case t.TaskUnblocked():
                state.status[ident] = "pending"
            case _:
                return state, []
        if state.status.get(ident) != "blocked":
            self._forget(state, ident)
        if state.status.get(ident) == before:
            return state, []
        waiters = sorted(state.dependants.get(ident, ()))
        return state, [i for waiter in waiters for i in self._verdict(state, waiter, seen)]

    def _forget(self, state: Graph, task_id: str) -> None:
        for dep in state.waiting.pop(task_id, []):
            waiters = state.dependants.get(dep)
            if waiters is not None:
                waiters.discard(task_id)
                if not waiters:
                    del state.dependants[dep]

    def _verdict(self, state: Graph, task_id: str, cause: Seen | None) -> list[Intent]:
        """What a waiting task's dependencies call for now: unblock, a failure to pass on, or nothing yet."""
        deps = state.waiting.get(task_id)
        if deps is None:
            return []
        stream = f"task:{task_id}"
        for dep in deps:
            status = state.status.get(dep)
            if status in _ENDED_BADLY:
                return [intent(self.name, stream, "task.fail_dependency",
                               {"dependency": dep, "dependency_status": status}, cause)]
        if all(state.status.get(dep) == "succeeded" for dep in deps):
            return [intent(self.name, stream, "task.unblock", {}, cause)]
        return []

    def pending(self, state: Graph) -> list[Intent]:
        return [i for task_id in sorted(state.waiting) for i in self._verdict(state, task_id, None)]

    def due(self, state: Graph) -> datetime | None:
        return None

    def rejected(self, state: Graph, sent: Intent, code: str) -> list[Intent]:
        return []


def cluster_managers() -> list[Any]:
    return [LeaseExpiry(), NodeLiveness(), Dependencies()]
