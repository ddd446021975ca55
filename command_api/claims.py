"""Claiming the next task: the read model proposes, the task's decider disposes.

A worker asks for the next task it can do. The read model lists the pending tasks whose
required skills the node offers, highest priority first and oldest first within a priority;
the claim service tries ``task.claim`` on each in turn until one is accepted. The decider of the
task is the only judge (a task already claimed is refused with ``not_claimable``), so two
workers never get the same task however stale the read model is.

Note: within this process, a task whose claim is being decided is skipped by the other claims
(as ``FOR UPDATE SKIP LOCKED`` would), and a task claimed here is skipped while the read model
still shows it at a version before that claim, so concurrent workers do not queue on the same
head of the list.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from blackboard.command_api.errors import NodeNotFound, NodeUnavailable
from blackboard.command_api.service import CommandService, submit
from blackboard.schemas.api import Accepted, CommandRequest
from blackboard.schemas.task import ClaimTask

#: (skills offered, most ids, ids to leave out) → (id, version in the read model) of claimable tasks, in the
#: order to try them.
Candidates = Callable[[list[str], int, list[str]], Awaitable[list[tuple[str, int]]]]
#: Seconds a claim made here is remembered, at most (the read model sees it long before).
RECENT_SECONDS = 30.0
ROUNDS = 4
PAGE = 32


class Claimed:
    """A claim accepted: the task, its fencing token, and the state the worker needs to start."""

    def __init__(self, task_id: str, outcome: Accepted, state: Any) -> None:
        self.task_id, self.outcome, self.state = task_id, outcome, state


class ClaimService:
    def __init__(self, service: CommandService, candidates: Candidates) -> None:
        self.service, self.candidates = service, candidates
        self._inflight: set[str] = set()
        #: task id → (stream version of the claim accepted here, when to forget it).
        self._recent: dict[str, tuple[int, float]] = {}

    def node_skills(self, node_id: str, offered: list[str] | None = None) -> list[str]:
        """The skills ``node_id`` registered with; ``NodeNotFound`` when unknown, ``NodeUnavailable`` when offline
        or deregistered.

        Note: a node whose partition is decided by another process (several deciders in a group)
        cannot be checked here: its claim then offers the skills it names (``offered``).
        """
        if not self.service.owns(f"node:{node_id}"):
            return list(offered or [])
        found = self.service.peek(f"node:{node_id}")
        if found is None:
            raise NodeNotFound(f"node {node_id!r} is not registered")
        node = found[0]
        if node.status != "online":
            raise NodeUnavailable(f"node {node_id!r} is {node.status}; a heartbeat brings it back online",
                                  code=f"node_{node.status}")
        return list(node.skills)

    async def claim(self, node_id: str, *, skills: list[str] | None, lease_seconds: int | None,
                    actor: str, tenant: str | None = None) -> Claimed | None:
        """Claim the next task ``node_id`` can do, or ``None`` when there is none."""
        registered = self.node_skills(node_id, skills)  # also: the node is registered and online
        offered = registered if skills is None else skills
        payload = ClaimTask(node=node_id, skills=offered, lease_seconds=lease_seconds)
        self._forget_old()
        tried: set[str] = set()
        for _ in range(ROUNDS):
            found = await self.candidates(offered, PAGE, sorted(tried | self._inflight))
            if not found:
                return None
            for task_id, version in found:
                if task_id in self._inflight or version < self._recent.get(task_id, (0, 0.0))[0]:
                    tried.add(task_id)
                    continue
                tried.add(task_id)
                claimed = await self._try(task_id, payload, actor, tenant)
                if claimed is not None:
                    return claimed
        return None

    async def _try(self, task_id: str, payload: ClaimTask, actor: str, tenant: str | None) -> Claimed | None:
        stream = f"task:{task_id}"
        command_id = f"claim-{uuid.uuid4().hex}"
        request = CommandRequest("task.claim", stream, msgspec.to_builtins(payload), command_id=command_id)
        self._inflight.add(task_id)
        try:
            # A claim's id is new for every try, so its fingerprint is the id: no repeat is ever compared.
            outcome, _ = await submit(self.service, request, payload, actor=actor, tenant=tenant,
                                      fingerprint=command_id)
        finally:
            self._inflight.discard(task_id)
        if not isinstance(outcome, Accepted) or not outcome.events:
            return None
        self._recent[task_id] = (outcome.version, time.monotonic() + RECENT_SECONDS)
        found = self.service.peek(stream)
        return Claimed(task_id, outcome, found[0] if found else None)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for task_id in [t for t, (_, until) in self._recent.items() if until <= now]:
            del self._recent[task_id]
