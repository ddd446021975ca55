"""Claiming the next task: the read model proposes, the task's decider disposes.

A worker asks for the next task it can do. The read model lists the pending tasks whose
required skills the node offers, highest priority first and oldest first within a priority;
the claim service tries ``task.claim`` on each in turn until one is accepted. The decider of the
task is the only judge (a task already claimed is refused with ``not_claimable``), so two
workers never get the same task however stale the read model is.

A node is its tenant's, and so are the tasks it is given: the node's id is named as its tenant names it, the
candidates are the tenant's tasks only, and each claim is sent as the tenant would send it (the task's id without
its tenant's prefix, scoped again where every submission is made, ``schemas/tenancy.py``), so its events carry the
caller's tenant.

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
from blackboard.schemas.auth import DEFAULT_TENANT
from blackboard.schemas.task import ClaimTask
from blackboard.schemas.tenancy import scope_stream, split_id

#: (skills offered, most ids, stored ids to leave out, tenant) → (stored id, version in the read model) of the
#: tenant's claimable tasks, in the order to try them.
Candidates = Callable[[list[str], int, list[str], str], Awaitable[list[tuple[str, int]]]]
#: Seconds a claim made here is remembered, at most (the read model sees it long before).
RECENT_SECONDS = 30.0
ROUNDS = 4
PAGE = 32


class Claimed:
    """A claim accepted: the task (as its tenant names it), its fencing token, and the state the worker needs to
    start."""

    def __init__(self, task_id: str, outcome: Accepted, state: Any) -> None:
        self.task_id, self.outcome, self.state = task_id, outcome, state


class ClaimService:
    def __init__(self, service: CommandService, candidates: Candidates) -> None:
        self.service, self.candidates = service, candidates
        self._inflight: set[str] = set()
        #: task id → (stream version of the claim accepted here, when to forget it).
        self._recent: dict[str, tuple[int, float]] = {}

    def node_skills(self, node_id: str, offered: list[str] | None = None, *, tenant: str = DEFAULT_TENANT
                    ) -> list[str]:
        """The skills ``node_id`` (of ``tenant``) registered with; ``NodeNotFound`` when unknown, ``NodeUnavailable``
        when offline or deregistered.

        Note: a node whose partition is decided by another process (several deciders in a group)
        cannot be checked here: its claim then offers the skills it names (``offered``).
        """
        stream = scope_stream(tenant, f"node:{node_id}")
        if not self.service.owns(stream):
            return list(offered or [])
        found = self.service.peek(stream)
        if found is None:
            raise NodeNotFound(f"node {node_id!r} is not registered")
        node = found[0]
        if node.status != "online":
            raise NodeUnavailable(f"node {node_id!r} is {node.status}; a heartbeat brings it back online",
                                  code=f"node_{node.status}")
        return list(node.skills)

    async def claim(self, node_id: str, *, skills: list[str] | None, lease_seconds: int | None,
                    actor: str, tenant: str = DEFAULT_TENANT) -> Claimed | None:
        """Claim the next task of ``tenant`` that its node ``node_id`` (as the tenant names it) can do, or ``None``
        when there is none."""
        registered = self.node_skills(node_id, skills, tenant=tenant)  # also: the node is registered and online
        offered = registered if skills is None else skills
        payload = ClaimTask(node=node_id, skills=offered, lease_seconds=lease_seconds)
        self._forget_old()
        tried: set[str] = set()
        for _ in range(ROUNDS):
            found = await self.candidates(offered, PAGE, sorted(tried | self._inflight), tenant)
            if not found:
                return None
            for stored, version in found:
                tried.add(stored)
                owner, task_id = split_id(stored)
                if owner != tenant:  # never another tenant's task, whatever the read model answered
                    continue
                if stored in self._inflight or version < self._recent.get(stored, (0, 0.0))[0]:
                    continue
                claimed = await self._try(stored, task_id, payload, actor, tenant)
                if claimed is not None:
                    return claimed
        return None

    async def _try(self, stored: str, task_id: str, payload: ClaimTask, actor: str, tenant: str) -> Claimed | None:
        """Claim task ``task_id`` of ``tenant`` (stored as ``stored``), sent as the tenant would send it."""
        command_id = f"claim-{uuid.uuid4().hex}"
        request = CommandRequest("task.claim", f"task:{task_id}", msgspec.to_builtins(payload),
                                 command_id=command_id)
        self._inflight.add(stored)
        try:
            # A claim's id is new for every try, so its fingerprint is the id: no repeat is ever compared.
            outcome, _ = await submit(self.service, request, payload, actor=actor, tenant=tenant,
                                      fingerprint=command_id)
        finally:
            self._inflight.discard(stored)
        if not isinstance(outcome, Accepted) or not outcome.events:
            return None
        self._recent[stored] = (outcome.version, time.monotonic() + RECENT_SECONDS)
        found = self.service.peek(outcome.stream)
        return Claimed(task_id, outcome, found[0] if found else None)

    def _forget_old(self) -> None:
        now = time.monotonic()
        for task_id in [t for t, (_, until) in self._recent.items() if until <= now]:
            del self._recent[task_id]
