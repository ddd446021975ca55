"""Random command sequences over HTTP against a pure model of the deciders (budgets and reservations, tasks and
their claims, leases), with restarts of the runtime: every answer is the one the model predicts, a command sent
again answers its first outcome, after every step the read model of what the step touched equals the model
(which itself never spends a budget beyond its total nor lets a fencing token go down), and at the end each
stream's history holds exactly the events the model says.

Each example works on streams of its own, in one runtime shared by the examples (a runtime per example would
cost seconds each), restarted at most once per example.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from blackboard.app import Runtime
from blackboard.config import Settings
from tests.integration.harness import running, settings_for

T = TypeVar("T")
PROJECTS, TASKS, NODES, HOLDERS, RESERVATIONS = ["p0", "p1"], ["t0", "t1"], ["n0", "n1"], ["h0", "h1"], ["r0", "r1"]
TOTAL = Decimal("1.00")
CENTS = st.integers(min_value=1, max_value=60).map(lambda c: Decimal(c) / 100)
#: Which fencing token a holder sends: the current one, an older one, or one never granted.
TOKEN = st.sampled_from([0, -1, 1])
#: How long each restart took (it is reported).
RESTART_SECONDS: list[float] = []


# ── the model: the deciders' rules, pure ──────────────────────────────────────────────


@dataclass
class ProjectModel:
    spent: Decimal = Decimal(0)
    reserved: dict[str, Decimal] = field(default_factory=dict)

    @property
    def remaining(self) -> Decimal:
        return TOTAL - self.spent - sum(self.reserved.values(), Decimal(0))


@dataclass
class TaskModel:
    status: str = "pending"
    token: int = 0
    node: str | None = None


@dataclass
class LeaseModel:
    holder: str | None = None
    token: int = 0


Expected = tuple[int, str | None]  # the status, and the rejection's code


def accepted() -> Expected:
    return 200, None


def rejected(code: str) -> Expected:
    return 409, code


# ── the machine ───────────────────────────────────────────────────────────────────────


class CommandsAgainstTheModel(RuleBasedStateMachine):
    """Commands over HTTP, each checked against the model; the runtime is shared (class attributes)."""

    loop: ClassVar[asyncio.AbstractEventLoop]
    client: ClassVar[httpx.AsyncClient]
    runtime: ClassVar[Runtime]

    def __init__(self) -> None:
        super().__init__()
        self.ns = uuid.uuid4().hex[:8]
        self.projects: dict[str, ProjectModel] = {}
        self.tasks: dict[str, TaskModel] = {}
        self.lease = LeaseModel()
        self.tokens_seen: dict[str, int] = {}
        self.last: tuple[dict[str, Any], Expected, dict[str, Any]] | None = None
        self.touched: tuple[str, str, str] | None = None  # kind, id, position to read at
        self.restarted = False
        #: Per stream: (command id, event type) of every event the model says was appended, in order.
        self.history: dict[str, list[tuple[str, str]]] = {}
        self.positions: dict[str, str] = {}

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def _send(self, type_: str, stream: str, payload: dict[str, Any], expected: Expected,
              emits: list[str]) -> None:
        """Send a command, check its answer is ``expected`` and, when accepted, remember the ``emits`` it appended."""
        kind, ident = stream.split(":")
        full, command_id = f"{kind}:{self.ns}-{ident}", uuid.uuid4().hex
        body = {"type": type_, "stream": full, "payload": payload, "command_id": command_id}
        answer = self._run(self.client.post("/v1/commands", json=body))
        got = answer.json()
        assert (answer.status_code, got.get("code")) == expected, (body, answer.status_code, got)
        self.last = (body, expected, got)
        if answer.status_code == 200:
            self.touched = (kind, ident, got["position"])
            self.positions[full] = got["position"]
            self.history.setdefault(full, []).extend((command_id, e) for e in emits)

    # ── projects: budgets and reservations ──

    @rule(p=st.sampled_from(PROJECTS))
    def create_project(self, p: str) -> None:
        # The same creation again changes nothing, and is accepted.
        self._send("project.create", f"project:{p}", {"title": "t", "currency": "EUR", "budget_total": str(TOTAL)},
                   accepted(), [] if p in self.projects else ["project.created"])
        self.projects.setdefault(p, ProjectModel())

    def _project(self, p: str) -> ProjectModel | None:
        return self.projects.get(p)

    @rule(p=st.sampled_from(PROJECTS), amount=CENTS)
    def add_cost(self, p: str, amount: Decimal) -> None:
        m = self._project(p)
        expected = (rejected("not_found") if m is None else accepted() if amount <= m.remaining
                    else rejected("budget_exceeded"))
        self._send("project.add_cost", f"project:{p}", {"amount": str(amount), "reason": "r"}, expected,
                   ["project.cost_added"])
        if m is not None and expected == accepted():
            m.spent += amount

    @rule(p=st.sampled_from(PROJECTS), amount=CENTS)
    def refund(self, p: str, amount: Decimal) -> None:
        m = self._project(p)
        expected = (rejected("not_found") if m is None else accepted() if amount <= m.spent
                    else rejected("refund_exceeds_spent"))
        self._send("project.refund_cost", f"project:{p}", {"amount": str(amount), "reason": "r"}, expected,
                   ["project.cost_refunded"])
        if m is not None and expected == accepted():
            m.spent -= amount

    @rule(p=st.sampled_from(PROJECTS), rid=st.sampled_from(RESERVATIONS), amount=CENTS)
    def reserve(self, p: str, rid: str, amount: Decimal) -> None:
        m = self._project(p)
        expected = (rejected("not_found") if m is None else rejected("reservation_exists") if rid in m.reserved
                    else accepted() if amount <= m.remaining else rejected("budget_exceeded"))
        self._send("project.reserve_budget", f"project:{p}",
                   {"reservation_id": rid, "amount": str(amount), "reason": "r", "ttl_seconds": 3600}, expected,
                   ["project.budget_reserved"])
        if m is not None and expected == accepted():
            m.reserved[rid] = amount

    @rule(p=st.sampled_from(PROJECTS), rid=st.sampled_from(RESERVATIONS), commit=st.booleans())
    def end_reservation(self, p: str, rid: str, commit: bool) -> None:
        m = self._project(p)
        expected = (rejected("not_found") if m is None else accepted() if rid in m.reserved
                    else rejected("reservation_not_found"))
        type_ = "project.commit_reservation" if commit else "project.release_reservation"
        self._send(type_, f"project:{p}", {"reservation_id": rid}, expected,
                   ["project.reservation_committed" if commit else "project.reservation_released"])
        if m is not None and expected == accepted():
            held = m.reserved.pop(rid)
            m.spent += held if commit else Decimal(0)

    # ── tasks: claims and their fencing tokens ──

    @rule(t=st.sampled_from(TASKS))
    def create_task(self, t: str) -> None:
        self._send("task.create", f"task:{t}", {"name": "n", "lease_seconds": 3600}, accepted(),
                   [] if t in self.tasks else ["task.created"])
        self.tasks.setdefault(t, TaskModel())

    @rule(t=st.sampled_from(TASKS), node=st.sampled_from(NODES))
    def claim(self, t: str, node: str) -> None:
        m = self.tasks.get(t)
        if m is None:
            expected = rejected("not_found")
        elif m.node == node and m.status in ("claimed", "running"):
            expected = accepted()  # the same claim again
        else:
            expected = accepted() if m.status == "pending" else rejected("not_claimable")
        pending = m is not None and m.status == "pending"
        self._send("task.claim", f"task:{t}", {"node": node}, expected, ["task.claimed"] if pending else [])
        if m is not None and expected == accepted() and m.status == "pending":
            m.status, m.token, m.node = "claimed", m.token + 1, node

    @rule(t=st.sampled_from(TASKS), offset=TOKEN, complete=st.booleans())
    def holder_moves(self, t: str, offset: int, complete: bool) -> None:
        """``task.start`` or ``task.complete`` with the claim's token, an older one or one never granted."""
        m = self.tasks.get(t)
        token = max(1, (m.token if m else 1) + offset)
        if m is None:
            expected = rejected("not_found")
        elif m.node is not None and token == m.token and m.status in ("claimed", "running"):
            expected = accepted()
        elif complete and m.status == "succeeded" and token == m.token:
            expected = accepted()  # the holder's completion again
        else:
            expected = rejected("lease_lost")
        type_ = "task.complete" if complete else "task.start"
        # Accepted, it moves a held task (a start of a running one, a completion of a succeeded one: no event).
        moves = m is not None and m.status in ("claimed", "running") and (complete or m.status == "claimed")
        self._send(type_, f"task:{t}", {"token": token}, expected,
                   ["task.succeeded" if complete else "task.started"] if moves else [])
        if m is not None and expected == accepted() and m.status in ("claimed", "running"):
            m.status = "succeeded" if complete else "running"
            m.node = None if complete else m.node

    # ── a lease ──

    @rule(holder=st.sampled_from(HOLDERS))
    def acquire(self, holder: str) -> None:
        m = self.lease
        expected = accepted() if m.holder in (None, holder) else rejected("lease_held")
        self._send("lease.acquire", "lease:l0", {"holder": holder, "ttl_seconds": 3600}, expected,
                   ["lease.granted" if m.holder is None else "lease.renewed"])
        if expected == accepted() and m.holder is None:
            m.holder, m.token = holder, m.token + 1

    @rule(holder=st.sampled_from(HOLDERS), offset=TOKEN)
    def release(self, holder: str, offset: int) -> None:
        m = self.lease
        token = max(1, m.token + offset)
        if m.holder is None and token <= m.token:
            expected = accepted()  # already free
        else:
            expected = accepted() if (m.holder, m.token) == (holder, token) else rejected("lease_lost")
        self._send("lease.release", "lease:l0", {"holder": holder, "token": token}, expected,
                   [] if m.holder is None else ["lease.released"])
        if expected == accepted():
            m.holder = None

    # ── retries and restarts ──

    @precondition(lambda self: self.last is not None)
    @rule()
    def send_again(self) -> None:
        """The last command again, with its ``command_id``: its first outcome, nothing appended (I9).

        Note: an accepted command is answered from memory (``Idempotent-Replayed``); a rejected one may be decided
        again, which here, with nothing changed in between, must give the same answer.
        """
        assert self.last is not None
        body, expected, first = self.last
        answer = self._run(self.client.post("/v1/commands", json=body))
        assert answer.status_code == expected[0] and answer.json() == first, answer.text
        if expected[0] == 200:
            assert answer.headers.get("idempotent-replayed") == "true", answer.headers

    @precondition(lambda self: not self.restarted)
    @rule()
    def restart(self) -> None:
        """Stop the runtime and start it again: every owner restores its partitions from the log.

        Note: once per example, which keeps the run short and depends on nothing but the example
        (Hypothesis replays an example to shrink it, and must draw the same rules each time).
        """
        self.restarted = True
        started = time.monotonic()
        self._run(self.runtime.stop())
        self._run(self.runtime.start())
        RESTART_SECONDS.append(time.monotonic() - started)

    # ── after every step ──

    @invariant()
    def the_model_holds(self) -> None:
        for m in self.projects.values():
            assert m.spent >= 0 and m.remaining >= 0  # I6
        for key, token in [*((f"task:{t}", m.token) for t, m in self.tasks.items()), ("lease", self.lease.token)]:
            assert token >= self.tokens_seen.get(key, 0), key  # fencing tokens never go down
            self.tokens_seen[key] = token

    @invariant()
    def what_the_step_touched_reads_as_the_model(self) -> None:
        if self.touched is None:
            return
        kind, ident, position = self.touched
        self.touched = None
        path = {"project": "projects", "task": "tasks", "lease": "leases"}[kind]
        answer = self._run(self.client.get(f"/v1/{path}/{self.ns}-{ident}", params={"consistent_with": position}))
        assert answer.status_code == 200, answer.text
        view = answer.json()
        if kind == "project":
            m = self.projects[ident]
            budget = {k: Decimal(view["budget"][k]) for k in ("total", "spent", "reserved")}
            reserved = sum(m.reserved.values(), Decimal(0))
            assert budget == {"total": TOTAL, "spent": m.spent, "reserved": reserved}, (budget, m)
        elif kind == "task":
            t = self.tasks[ident]
            assert (view["status"], view["token"]) == (t.status, t.token), (view, t)
        else:
            assert (view["holder"] if view["held"] else None, view["token"]) == (self.lease.holder, self.lease.token)


    def teardown(self) -> None:
        """Each stream's history: the events the model says, in its order, with versions 1..n."""
        for stream, expected in self.history.items():
            answer = self._run(self.client.get(f"/v1/streams/{stream}/history",
                                               params={"consistent_with": self.positions[stream]}))
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            assert [e["version"] for e in items] == list(range(1, len(items) + 1)), stream
            # A process manager's events (a budget alert) are its own, not the model's.
            ours = [(e["command_id"], e["type"]) for e in items if not e["actor"].startswith("process:")]
            assert ours == expected, (stream, ours, expected)


def _settings(pg_url: str, topic_prefix: str) -> Settings:
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix)


async def test_the_command_service_agrees_with_a_model_of_the_deciders(pg_url: str, topic_prefix: str) -> None:
    async with running(_settings(pg_url, topic_prefix)) as (client, runtime):
        machine = CommandsAgainstTheModel
        machine.loop, machine.client, machine.runtime = asyncio.get_running_loop(), client, runtime
        # Hypothesis drives the machine synchronously: in a thread, while this loop serves its requests.
        await asyncio.to_thread(run_state_machine_as_test, machine, settings=settings(
            max_examples=12, stateful_step_count=15, deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow]))
    print(f"\nmodel: restarts={len(RESTART_SECONDS)} slowest_restart_s={max(RESTART_SECONDS, default=0):.2f}")


async def test_a_command_refused_on_a_missing_task_keeps_its_outcome(pg_url: str, topic_prefix: str) -> None:
    """Found by the machine above: a refused claim was answered but not remembered, so a retry could be accepted."""
    claim = {"type": "task.claim", "stream": "task:late", "payload": {"node": "n"}, "command_id": uuid.uuid4().hex}
    async with running(_settings(pg_url, topic_prefix)) as (client, _):
        first = await client.post("/v1/commands", json=claim)
        assert (first.status_code, first.json()["code"]) == (409, "not_found")
        made = await client.post("/v1/commands", json={"type": "task.create", "stream": "task:late",
                                                       "payload": {"name": "n"}})
        assert made.status_code == 200, made.text
        again = await client.post("/v1/commands", json=claim)
        assert (again.status_code, again.json().get("code")) == (409, "not_found"), again.text
        assert again.headers.get("idempotent-replayed") == "true"
