"""What the fault tests share: a link that can be cut, clients that retry like real ones, and the invariants
(docs/faults.md) checked once a fault has healed.

A cut is a partition as TCP sees it: a loopback proxy in front of the service stops passing bytes either way
and holds new connections unanswered (no reset, no refusal), then lets everything flow again. It needs no
privilege and changes nothing outside the test (a firewall rule or ``tc`` on ``lo`` would touch every process
of the machine); a network namespace would need a veth pair with addresses off loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg
import httpx

from blackboard.config import Settings
from blackboard.schemas.envelope import RecordedEvent
from blackboard.schemas.project import CostAdded, ProjectCreated
from blackboard.schemas.registry import decode_event
from tests.integration.harness import assert_dense_versions, read_checksums, read_events, rebuilding, wait_rebuilt
from tests.services import free_port

#: How long a dependency stays unreachable: short by default; the nightly run sets 20.
FAULT_SECONDS = float(os.environ.get("BLACKBOARD_FAULT_SECONDS", "2"))
#: The longest a service may take to recover by itself once its dependency is back (I10).
RECOVERY_SECONDS = 30.0


class Link:
    """A loopback port piped to ``upstream`` (a port, or a Unix socket's path) that a test can cut and heal."""

    def __init__(self, upstream: int | str, port: int | None = None) -> None:
        self.upstream, self.port = upstream, port or free_port()
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self._open.set()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """No byte passes either way from now on, and new connections hang, until ``heal``."""
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._open.wait()
            if isinstance(self.upstream, str):
                up_r, up_w = await asyncio.open_unix_connection(self.upstream)
            else:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)
            await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))
        except OSError:
            pass
        finally:
            client_w.close()
            self._tasks.discard(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._open.wait()  # held, as a partitioned network holds it
                sink.write(data)
                await sink.drain()
            await self._open.wait()  # even a close does not cross a cut
        except OSError:
            pass
        finally:
            sink.close()


def with_port(url: str, port: int) -> str:
    """``url`` pointing at ``127.0.0.1:port`` (its credentials and database kept)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{port}" if "@" in parts.netloc else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def upstream_of(url: str) -> int | str:
    """A server's TCP port, or its Unix socket (the embedded PostgreSQL listens on one only)."""
    parts = urlsplit(url)
    if parts.port is not None:
        return parts.port
    return f"{parse_qs(parts.query)['host'][0]}/.s.PGSQL.5432"


# ── clients that retry like real ones ─────────────────────────────────────────────────


@dataclass
class Outcomes:
    """What the clients saw: every answer's status, the commands acknowledged, and when each answer came."""

    sent: list[str] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)
    #: Commands answered 409, 422, or 429 by a client that does not retry it.
    refused: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    #: 429s and 503s that did not say when to come back.
    without_retry_after: int = 0
    #: The ``code`` of every 503.
    unavailable: Counter[str] = field(default_factory=Counter)
    #: (monotonic time, status) of every answer; 0 stands for a timeout or a broken connection.
    answers: list[tuple[float, int]] = field(default_factory=list)

    def first_success_after(self, moment: float) -> float | None:
        return min((t for t, status in self.answers if t >= moment and status == 200), default=None)


def cost(command_id: str, project: int) -> dict[str, Any]:
    return {"type": "project.add_cost", "stream": f"project:p-{project}", "command_id": command_id,
            "payload": {"amount": "0.01", "reason": "load"}}


async def create_projects(client: httpx.AsyncClient, count: int) -> None:
    for p in range(count):
        made = await client.post("/v1/commands", json={"type": "project.create", "stream": f"project:p-{p}",
                                                       "payload": {"title": "t", "currency": "EUR",
                                                                   "budget_total": "100000"}})
        assert made.status_code == 200, made.text


async def send_until_decided(client: httpx.AsyncClient, body: dict[str, Any], seen: Outcomes,
                             deadline: float, timeout: float = 2.0, retry_429: bool = True) -> int:
    """Send ``body`` until it is decided (not 503, not a timeout, not 429 unless ``retry_429`` is false), with the
    same ``command_id`` each time; its last status."""
    seen.sent.append(body["command_id"])
    while time.monotonic() < deadline:
        try:
            answer = await asyncio.wait_for(client.post("/v1/commands", json=body), timeout)
        except (httpx.TransportError, TimeoutError):
            seen.answers.append((time.monotonic(), 0))
            await asyncio.sleep(0.2)
            continue
        seen.answers.append((time.monotonic(), answer.status_code))
        seen.statuses[answer.status_code] += 1
        if answer.status_code in (429, 503) and not answer.headers.get("retry-after", "").isdigit():
            seen.without_retry_after += 1  # absent, or not whole seconds
        if answer.status_code == 503:
            seen.unavailable[answer.json().get("code", "")] += 1
        if answer.status_code == 503 or (answer.status_code == 429 and retry_429):
            await asyncio.sleep(min(float(answer.headers.get("retry-after", "0.2")), 1.0))
            continue
        if answer.status_code == 200:
            seen.acked[body["command_id"]] = answer.json()["position"]
        else:
            seen.refused.add(body["command_id"])
        return answer.status_code
    raise AssertionError(f"{body['command_id']} was not decided in time: {seen.statuses}")


async def cost_load(client: httpx.AsyncClient, name: str, projects: int, seen: Outcomes, stop: asyncio.Event,
                    deadline: float, pause: float = 0.02) -> None:
    """One client adding costs to the projects in turn until ``stop``, ``pause`` apart; each retried until decided.

    Note: the pause keeps the log small enough to check in a second or two; the fault, not the volume, is
    what is tested here (``test_fault_overload`` is about volume).
    """
    n = 0
    while not stop.is_set():
        status = await send_until_decided(client, cost(f"{name}-{n}", n % projects), seen, deadline)
        assert status == 200, status
        n += 1
        await asyncio.sleep(pause)


# ── a command load through a fault, and what it saw ───────────────────────────────────

#: Projects and clients of the load under a cut.
PROJECTS, CLIENTS = 3, 4
#: An answer already on its way when a link is cut may still arrive just after.
SETTLE = 0.5


@contextlib.asynccontextmanager
async def loaded(client: httpx.AsyncClient, seen: Outcomes) -> AsyncIterator[None]:
    """``CLIENTS`` clients adding costs while the body runs; they finish what they sent once it is done."""
    stop = asyncio.Event()
    deadline = time.monotonic() + 4 * FAULT_SECONDS + 2 * RECOVERY_SECONDS
    load = [asyncio.create_task(cost_load(client, f"c{i}", PROJECTS, seen, stop, deadline)) for i in range(CLIENTS)]
    try:
        while len(seen.acked) < 2 * CLIENTS:  # flowing before the fault
            await asyncio.sleep(0.05)
        yield
    finally:
        stop.set()
        await asyncio.gather(*load)


async def status(client: httpx.AsyncClient, path: str, timeout: float = 5.0) -> int:
    """The status ``path`` answers, 0 for no answer within ``timeout``."""
    try:
        return (await asyncio.wait_for(client.get(path), timeout)).status_code
    except (httpx.TransportError, TimeoutError):
        return 0


async def until(client: httpx.AsyncClient, path: str, expected: int, timeout: float) -> float:
    """Seconds until ``path`` answers ``expected``; fails after ``timeout``."""
    started = time.monotonic()
    while await status(client, path) != expected:
        assert time.monotonic() - started < timeout, f"{path} did not answer {expected} within {timeout} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def report(fault: str, seen: Outcomes, healed: float, caught_up: float) -> None:
    """One line per fault for the record: what was injected, how long recovery took, what the clients saw."""
    first = seen.first_success_after(healed)
    recovered = f"{first - healed:.2f}" if first is not None else "n/a"
    print(f"\nfault={fault} unreachable_s={FAULT_SECONDS} first_ack_after_heal_s={recovered} "
          f"lag_zero_after_s={caught_up:.2f} acked={len(seen.acked)} statuses={dict(seen.statuses)} "
          f"503_codes={dict(seen.unavailable)} 503_without_retry_after={seen.without_retry_after}")


def acked_between(seen: Outcomes, start: float, end: float) -> int:
    return sum(1 for t, answered in seen.answers if start < t < end and answered == 200)


def no_5xx_but_503(seen: Outcomes) -> None:
    """Nothing worse than a 503 was answered, and every 503 and 429 said when to come back."""
    assert {s for s in seen.statuses if s >= 500} <= {503}, seen.statuses
    assert seen.without_retry_after == 0, f"{seen.without_retry_after} answers of {seen.statuses} without Retry-After"


#: The bound on a command's wait in the cut tests: below the clients' 2 s timeout, so that a command caught by a
#: cut is answered (``503 outcome_pending``), not left to time out.
COMMAND_TIMEOUT = 1.0


def answered_while_away(seen: Outcomes) -> None:
    """Commands caught by the cut were answered ``503 outcome_pending`` (with ``Retry-After``), not left hanging."""
    assert seen.unavailable["outcome_pending"] > 0, (seen.statuses, seen.unavailable)
    no_5xx_but_503(seen)


def answered_and_recovered(seen: Outcomes, healed: float) -> None:
    """After a cut: answered while away, every command sent decided and accepted, the first acknowledgement
    after healing within ``RECOVERY_SECONDS``."""
    answered_while_away(seen)
    assert set(seen.acked) == set(seen.sent), "every command was decided, and accepted"
    assert (seen.first_success_after(healed) or healed + RECOVERY_SECONDS) - healed < RECOVERY_SECONDS


# ── the invariants, once the fault has healed ─────────────────────────────────────────


async def wait_caught_up(pg_url: str, settings: Settings, log_ends: dict[int, int], timeout: float) -> float:
    """Seconds until every partition's stored projection offset is its log end (I5, I10); fails after ``timeout``."""
    started = time.monotonic()
    conn = await asyncpg.connect(pg_url)
    try:
        while True:
            rows = await conn.fetch(f'SELECT partition, next_offset FROM "{settings.read_schema}".projection_offsets')
            stored = {r["partition"]: r["next_offset"] for r in rows}
            if all(stored.get(p, 0) == end for p, end in log_ends.items()):
                return time.monotonic() - started
            assert time.monotonic() - started < timeout, f"lag not back to 0: {stored} of {log_ends}"
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


def assert_budgets_held(events: list[RecordedEvent]) -> None:
    """I6: in every prefix of the log, no project has spent more than its total."""
    totals: dict[str, Decimal] = {}
    spent: dict[str, Decimal] = {}
    for e in events:
        env = e.envelope
        event = decode_event(env.type, env.schema_version, env.payload)
        if isinstance(event, ProjectCreated):
            totals[env.stream] = event.budget_total
        elif isinstance(event, CostAdded):
            spent[env.stream] = spent.get(env.stream, Decimal(0)) + event.amount
            assert spent[env.stream] <= totals[env.stream], (env.stream, env.stream_version)


async def check_invariants(settings: Settings, pg_url: str, acked: set[str], refused: Iterable[str] = ()) -> float:
    """I1 to I6, I8 and I10 (docs/faults.md) over a log of project costs; the seconds the projection took to catch up.

    ``acked``: the costs acknowledged (or decided with 200 on a retry), each of which must be in the log once;
    ``refused``: those answered 409, 422 or 429, none of which may be. ``pg_url`` reaches PostgreSQL directly.
    """
    engine = "kafka" if settings.kafka_bootstrap_servers else "postgres"
    async with rebuilding(engine, pg_url, settings.topic_prefix, settings.kafka_bootstrap_servers) as (_, rebuild):
        assert rebuild.log is not None
        events = await read_events(rebuild.log, settings.events_topic)
        ends = {p: await rebuild.log.end_offset(settings.events_topic, p) for p in range(rebuild.partitions)}
        caught_up = await wait_caught_up(pg_url, settings, ends, RECOVERY_SECONDS)
        costs = Counter(e.envelope.command_id for e in events if e.envelope.type == "project.cost_added")
        assert costs == Counter(acked), "lost or doubled commands"  # I1, I2, I9
        assert not set(refused) & set(costs), "a refused command left an event"  # I8
        assert_dense_versions(events)  # I3
        assert_budgets_held(events)  # I6
        await wait_rebuilt(rebuild.log, settings, pg_url, "rebuild")
    assert await read_checksums(pg_url, settings.read_schema) == await read_checksums(pg_url, "rebuild")  # I4
    conn = await asyncpg.connect(pg_url)
    try:  # I1 in the read models: every cost is spent
        spent = await conn.fetchval(f'SELECT coalesce(sum(spent), 0) FROM "{settings.read_schema}".projects')
    finally:
        await conn.close()
    assert spent == Decimal("0.01") * len(acked)
    return caught_up
