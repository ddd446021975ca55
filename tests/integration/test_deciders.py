"""Several decider processes share the partitions: under a steady load, while processes join, leave, are
killed with -9 or paused past their session (a zombie), every acknowledged command is in the log exactly once,
no budget is overspent, and the read models equal a fresh rebuild of the log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from blackboard.events.codec import passed_over
from blackboard.events.partitioner import partition_for
from tests.integration.harness import (
    Process,
    assert_dense_versions,
    read_checksums,
    read_events,
    rebuilding,
    wait_rebuilt,
)
from tests.services import free_port

pytestmark = pytest.mark.slow

PROJECTS = 6
BUDGET = Decimal("20.00")
COST = Decimal("0.10")
SESSION = "6"


def _env(engine: str, pg_url: str, topic_prefix: str, kafka: str | None) -> dict[str, str]:
    return {"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix,
            "BLACKBOARD_PARTITIONS": "4", "BLACKBOARD_PROCESS_MANAGERS": "false",
            "BLACKBOARD_SWEEP_RESERVATIONS": "false", "BLACKBOARD_ROUTE_TIMEOUT_SECONDS": "15",
            **({"BLACKBOARD_KAFKA_BOOTSTRAP_SERVERS": kafka} if kafka else {})}


def decider(env: dict[str, str], name: str) -> Process:
    """A command-only process in the deciders' group."""
    return Process({**env, "BLACKBOARD_DECIDER_MODE": "group", "BLACKBOARD_MEMBER_ID": name,
                    "BLACKBOARD_SESSION_TIMEOUT_SECONDS": SESSION}, free_port(), "command")


def read_side(env: dict[str, str]) -> Process:
    """The projector and the query API, deciding nothing (and routing any command it is sent)."""
    return Process({**env, "BLACKBOARD_DECIDER_MODE": "none"}, free_port(),
                   "projector", "query", "command")


class Load:
    """Clients that send costs to any live process and retry each command, same id, until it is answered."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.answers: dict[str, httpx.Response] = {}
        self.sent: dict[str, int] = {}
        self.retries = 0
        self.stop = asyncio.Event()
        self._ids = itertools.count()

    async def send(self, client: httpx.AsyncClient, cid: str, project: int, deadline: float) -> None:
        body = {"type": "project.add_cost", "stream": f"project:p-{project}", "command_id": cid,
                "payload": {"amount": str(COST), "reason": "load"}}
        while time.monotonic() < deadline:
            url = random.choice(self.urls)
            try:
                r = await client.post(f"{url}/v1/commands", json=body)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code in (200, 409):
                self.answers[cid] = r
                return
            assert r is None or r.status_code == 503, r.text
            self.retries += 1
            await asyncio.sleep(0.05)
        raise AssertionError(f"{cid} was never answered")

    async def client(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not self.stop.is_set():
                cid, project = f"c-{next(self._ids)}", random.randrange(PROJECTS)
                self.sent[cid] = project
                await self.send(client, cid, project, time.monotonic() + 120)

    def acked(self) -> set[str]:
        return {cid for cid, r in self.answers.items() if r.status_code == 200}


async def _create_projects(url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        for p in range(PROJECTS):
            body = {"type": "project.create", "stream": f"project:p-{p}", "command_id": f"create-{p}",
                    "payload": {"title": "t", "currency": "EUR", "budget_total": str(BUDGET)}}
            for _ in range(100):
                r = await client.post(f"{url}/v1/commands", json=body)
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 200, r.text


async def partitions_of(url: str) -> dict[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        report = (await client.get(f"{url}/v1/partitions")).json()
    return {p["partition"]: p for p in report["partitions"] if p["ready"]}


async def until_owned(processes: Sequence[Process], partitions: int = 4, timeout: float = 60) -> dict[int, str]:
    """Wait until every partition is decided (ready) by exactly one of ``processes``; partition → url."""
    deadline = time.monotonic() + timeout
    while True:
        owners: dict[int, list[str]] = {}
        for proc in processes:
            for p in await partitions_of(proc.url):
                owners.setdefault(p, []).append(proc.url)
        if len(owners) == partitions and all(len(v) == 1 for v in owners.values()) and all(
                any(p for p, u in owners.items() if u == [proc.url]) for proc in processes):
            return {p: v[0] for p, v in owners.items()}
        assert time.monotonic() < deadline, f"partitions not shared among {len(processes)} processes: {owners}"
        await asyncio.sleep(0.25)


async def _check(engine: str, pg_url: str, topic_prefix: str, kafka: str | None, load: Load,
                 live_read_url: str) -> Counter[str]:
    """Every acknowledged cost once in the log, none overspent, read models = a fresh rebuild; the fences seen."""
    async with rebuilding(engine, pg_url, topic_prefix, kafka) as (settings, runtime):
        assert runtime.log is not None
        events = await read_events(runtime.log, settings.events_topic)
        passed: Counter[str] = Counter()
        for p in range(4):
            end = await runtime.log.end_offset(settings.events_topic, p)
            reader = runtime.log.reader(settings.events_topic)
            try:
                await reader.seek(p, 0)
                got = 0
                while got < end:
                    for rec in await reader.read(max_records=5000, timeout=2.0):
                        got = rec.offset + 1
                        if (reason := passed_over(rec)) is not None:
                            passed[reason.split(":")[0]] += 1
            finally:
                await reader.close()
        costs = Counter(e.envelope.command_id for e in events if e.envelope.type == "project.cost_added")
        assert all(n == 1 for n in costs.values()), [c for c, n in costs.items() if n > 1]
        acked = load.acked()
        assert acked <= set(costs), f"acknowledged but not in the log: {sorted(acked - set(costs))[:10]}"
        assert set(costs) <= set(load.sent), "a cost nobody sent"
        rejected = {cid for cid, r in load.answers.items() if r.status_code == 409}
        assert not (rejected & set(costs)), "a command answered rejected is in the log"
        assert {r.json()["code"] for cid, r in load.answers.items() if cid in rejected} <= {"budget_exceeded"}
        assert_dense_versions(events)
        per_project = Counter(load.sent[cid] for cid in costs)
        assert all(COST * n <= BUDGET for n in per_project.values()), per_project
        await wait_rebuilt(runtime.log, settings, pg_url, "rebuild")
        await wait_rebuilt(runtime.log, settings, pg_url, settings.read_schema)
    assert await read_checksums(pg_url, settings.read_schema) == await read_checksums(pg_url, "rebuild")
    async with httpx.AsyncClient(timeout=10) as client:
        for p in range(PROJECTS):
            doc = (await client.get(f"{live_read_url}/v1/projects/p-{p}")).json()
            assert Decimal(doc["budget"]["spent"]) == COST * per_project[p]
    return passed


@dataclass
class Cluster:
    reads: Process
    a: Process
    b: Process
    owners: dict[int, str] = field(default_factory=dict)
    #: Deciders a test starts later: stopped with the others.
    more: list[Process] = field(default_factory=list)


@contextlib.asynccontextmanager
async def two_deciders(env: dict[str, str]) -> AsyncIterator[Cluster]:
    """A read side and deciders a and b, ready, every partition owned, the projects created; all stopped after."""
    cluster = Cluster(read_side(env), decider(env, "a"), decider(env, "b"))
    try:
        for proc in (cluster.reads, cluster.a, cluster.b):
            await proc.ready()
        cluster.owners = await until_owned([cluster.a, cluster.b])
        await _create_projects(cluster.reads.url)
        yield cluster
    finally:
        for proc in (cluster.a, cluster.b, *cluster.more, cluster.reads):
            if proc.proc.poll() is None:
                proc.resume()  # a paused process cannot stop
            proc.stop()


@pytest.fixture(params=["kafka", "postgres"])
def engine_env(request: pytest.FixtureRequest, pg_url: str, topic_prefix: str) -> tuple[str, dict[str, str], Any]:
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    return request.param, _env(request.param, pg_url, topic_prefix, kafka), kafka


async def test_two_then_three_then_one_decider_under_load(
    engine_env: tuple[str, dict[str, str], str | None], pg_url: str, topic_prefix: str
) -> None:
    engine, env, kafka = engine_env
    async with two_deciders(env) as cluster:
        reads, a, b = cluster.reads, cluster.a, cluster.b
        load = Load([a.url, b.url, reads.url])
        clients = [asyncio.create_task(load.client()) for _ in range(8)]
        await asyncio.sleep(3)
        c = decider(env, "c")
        cluster.more.append(c)
        await c.ready()
        load.urls.append(c.url)
        await until_owned([a, b, c])
        await asyncio.sleep(2)
        for leaving, staying in ((a, [b, c]), (b, [c])):
            load.urls.remove(leaving.url)
            await asyncio.to_thread(leaving.stop)  # a clean leave: its partitions move at once
            await until_owned(staying)
        await asyncio.sleep(2)
        load.stop.set()
        await asyncio.gather(*clients)
        async with httpx.AsyncClient(timeout=10) as client:
            for cid, project in load.sent.items():
                if cid not in load.answers:
                    await load.send(client, cid, project, time.monotonic() + 60)
        routed = sum([(await _report(proc.url))["routed"] for proc in (c, reads)])
        assert len(load.acked()) > 100, "the load must have been acknowledged"
        assert routed > 0, "commands sent to a process that does not decide their partition are routed"
        await _check(engine, pg_url, topic_prefix, kafka, load, reads.url)


async def test_kill_minus_nine_of_a_decider_moves_its_partitions(
    engine_env: tuple[str, dict[str, str], str | None], pg_url: str, topic_prefix: str
) -> None:
    engine, env, kafka = engine_env
    async with two_deciders(env) as cluster:
        reads, a, b = cluster.reads, cluster.a, cluster.b
        load = Load([a.url, b.url, reads.url])
        clients = [asyncio.create_task(load.client()) for _ in range(8)]
        await asyncio.sleep(3)
        a.kill9()
        load.urls.remove(a.url)
        await until_owned([b])
        await asyncio.sleep(2)
        load.stop.set()
        await asyncio.gather(*clients)
        acked_before = {cid: r.json() for cid, r in load.answers.items() if r.status_code == 200}
        async with httpx.AsyncClient(timeout=10) as client:
            # Every command again, same ids: the acknowledged ones answer their first outcome, decided nowhere twice.
            for cid, project in load.sent.items():
                body = {"type": "project.add_cost", "stream": f"project:p-{project}", "command_id": cid,
                        "payload": {"amount": str(COST), "reason": "load"}}
                r = await client.post(f"{b.url}/v1/commands", json=body)
                assert r.status_code in (200, 409), r.text
                if cid in acked_before:
                    assert r.status_code == 200 and r.headers.get("idempotent-replayed") == "true"
                    assert r.json()["position"] == acked_before[cid]["position"]
                load.answers.setdefault(cid, r)
        await _check(engine, pg_url, topic_prefix, kafka, load, reads.url)


async def test_a_paused_decider_is_fenced_when_it_wakes(
    engine_env: tuple[str, dict[str, str], str | None], pg_url: str, topic_prefix: str
) -> None:
    engine, env, kafka = engine_env
    async with two_deciders(env) as cluster:
        reads, a, b, owners = cluster.reads, cluster.a, cluster.b, cluster.owners
        # A project whose partition the soon-to-be zombie decides.
        zombie_projects = [p for p in range(PROJECTS) if owners[partition_for(f"p-{p}", 4)] == a.url]
        assert zombie_projects, owners
        load = Load([b.url, reads.url])
        a.pause()                                 # past its session: the group gives its partitions to b
        clients = [asyncio.create_task(load.client()) for _ in range(4)]
        await until_owned([b])
        # Commands sent to the zombie while it sleeps: it reads them the moment it wakes, still believing
        # it owns their partitions.
        zombie = Load([a.url])
        zombie.sent = {f"z-{i}": zombie_projects[i % len(zombie_projects)] for i in range(20)}
        async with httpx.AsyncClient(timeout=30) as client:
            pending = [asyncio.create_task(zombie.send(client, cid, p, time.monotonic() + 90))
                       for cid, p in zombie.sent.items()]
            await asyncio.sleep(0.5)
            a.resume()
            await asyncio.gather(*pending)
        load.stop.set()
        await asyncio.gather(*clients)
        merged = Load([])
        merged.sent = {**load.sent, **zombie.sent}
        merged.answers = {**load.answers, **zombie.answers}
        passed = await _check(engine, pg_url, topic_prefix, kafka, merged, reads.url)
        assert passed["ownership marker"] >= 6, passed  # a and b at the start, then b taking a's partitions


async def _report(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        report: dict[str, Any] = (await client.get(f"{url}/v1/partitions")).json()
    return report
