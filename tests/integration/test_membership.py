"""Partition ownership in a group, on both log engines (tansu's consumer groups; leases in PostgreSQL).

Each test records the callbacks of every member on one timeline and replays it: a partition is
never assigned to a member while another holds it (a member holds it from the start of its
``on_assigned`` to the end of its ``on_revoked``, and both callbacks take a while on purpose).

The member that stops answering runs in a process of its own (this module run as a script), which
the test freezes with SIGSTOP: nothing in it runs, just as in a paused or swapped-out process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from blackboard.events.log import PartitionedLog
from blackboard.events.membership import Callback, Membership, fair_share

PARTITIONS = 4
ALL = frozenset(range(PARTITIONS))
#: Short enough for quick tests. Note: tansu holds every JoinGroup for about half the session timeout, so
#: a Kafka rebalance on it takes that long (Kafka and Redpanda answer once every member has rejoined).
SESSION = 4.0
#: For a test that tells a prompt handover (a rebalance) from one that waited out the session.
LONG_SESSION = 10.0
ROOT = Path(__file__).resolve().parents[2]

Event = tuple[float, str, str, frozenset[int]]


class Timeline:
    """The callbacks of every member, in the order they happened."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def record(self, member: str, kind: str, partitions: frozenset[int]) -> None:
        self.events.append((asyncio.get_running_loop().time(), member, kind, partitions))
        self.changed.set()

    def callbacks(self, member: str, *, delay: float = 0.2) -> tuple[Callback, Callback]:
        """Callbacks that take ``delay`` seconds: held from the start of on_assigned to the end of on_revoked."""

        async def on_assigned(ps: frozenset[int]) -> None:
            self.record(member, "assigned", ps)
            await asyncio.sleep(delay)

        async def on_revoked(ps: frozenset[int]) -> None:
            await asyncio.sleep(delay)
            self.record(member, "revoked", ps)

        return on_assigned, on_revoked

    def owners(self) -> dict[int, str]:
        """Who holds each partition at the end; fails on any moment two members held one."""
        owner: dict[int, str] = {}
        for at, member, kind, partitions in self.events:
            for p in sorted(partitions):
                if kind == "assigned":
                    assert p not in owner, f"at {at:.2f} {member} got partition {p} while {owner.get(p)} held it"
                    owner[p] = member
                else:
                    assert owner.get(p) == member, f"at {at:.2f} {member} revoked partition {p} held by {owner.get(p)}"
                    del owner[p]
        return owner

    async def wait_for(self, check: Callable[[dict[int, str]], bool], timeout: float) -> float:
        """Seconds until ``check(owners)`` holds; fails after ``timeout``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not check(self.owners()):
            if loop.time() - start > timeout:
                raise AssertionError(f"not reached in {timeout}s; owners {self.owners()}, events {self.events}")
            self.changed.clear()
            await wait_briefly(self.changed.wait(), 0.1)
        return loop.time() - start


async def wait_briefly(aw: Awaitable[object], seconds: float) -> None:
    try:
        await asyncio.wait_for(aw, seconds)
    except TimeoutError:
        pass


def held_by(owners: dict[int, str], member: str) -> frozenset[int]:
    return frozenset(p for p, m in owners.items() if m == member)


def split_between(*members: str) -> Callable[[dict[int, str]], bool]:
    """Every partition owned, and every member owning some."""
    return lambda owners: set(owners) == ALL and set(owners.values()) == set(members)


@pytest.fixture
async def topic(log: PartitionedLog, topic_prefix: str) -> str:
    name = f"{topic_prefix}commands"
    await log.create_topic(name, PARTITIONS)
    return name


@pytest.fixture
def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


async def joined(log: PartitionedLog, group: str, topic: str, member: str, callbacks: tuple[Callback, Callback],
                 session: float = SESSION) -> Membership:
    m = log.membership(group, topic, member_id=member, session_timeout=session)
    await m.start(*callbacks)
    return m


def test_fair_share_deals_partitions_round_robin_over_sorted_members() -> None:
    assert fair_share(["b", "a"], "a", 5) == {0, 2, 4}
    assert fair_share(["b", "a"], "b", 5) == {1, 3}
    assert fair_share(["a"], "a", 3) == {0, 1, 2}
    assert fair_share(["a"], "c", 3) == frozenset()


@pytest.mark.timeout(90)
async def test_members_split_partitions_and_a_leaving_member_hands_over_promptly(
        log: PartitionedLog, topic: str, group: str) -> None:
    timeline = Timeline()
    a = await joined(log, group, topic, "a", timeline.callbacks("a"), session=LONG_SESSION)
    await timeline.wait_for(lambda owners: owners == dict.fromkeys(ALL, "a"), 3 * SESSION)
    assert a.owned() == ALL

    b = await joined(log, group, topic, "b", timeline.callbacks("b"), session=LONG_SESSION)
    await timeline.wait_for(split_between("a", "b"), 3 * SESSION)
    owners = timeline.owners()
    assert a.owned() == held_by(owners, "a") and b.owned() == held_by(owners, "b")

    await a.close()
    assert a.owned() == frozenset()
    # Leaving is announced: the other member takes over without waiting out a session.
    took = await timeline.wait_for(lambda owners: owners == dict.fromkeys(ALL, "b"), 3 * SESSION)
    assert took < 0.8 * LONG_SESSION, f"took over {took:.1f}s after the leave, as slow as a session timeout"
    assert b.owned() == ALL

    await b.close()
    assert timeline.owners() == {} and b.owned() == frozenset()


@pytest.mark.timeout(90)
async def test_slow_and_failing_callbacks_keep_the_membership(log: PartitionedLog, topic: str, group: str) -> None:
    """A restore longer than the session does not cost the session; a callback that raises is only logged.

    Another member is in the group throughout: it would take the partitions of a member whose
    session lapsed (tansu, for one, notices a lapsed session only when other members call).
    """
    timeline = Timeline()
    calls: list[str] = []

    async def slow_assigned(ps: frozenset[int]) -> None:
        timeline.record("a", "assigned", ps)
        await asyncio.sleep(1.5 * SESSION)
        calls.append("assigned")
        raise RuntimeError("a restore that fails")

    async def failing_revoked(ps: frozenset[int]) -> None:
        timeline.record("a", "revoked", ps)
        calls.append("revoked")
        raise RuntimeError("a flush that fails")

    b = await joined(log, group, topic, "b", timeline.callbacks("b"))
    await timeline.wait_for(lambda owners: owners == dict.fromkeys(ALL, "b"), 3 * SESSION)
    a = await joined(log, group, topic, "a", (slow_assigned, failing_revoked))
    await timeline.wait_for(split_between("a", "b"), 3 * SESSION)
    settled = len(timeline.events)
    await asyncio.sleep(2.5 * SESSION)
    assert timeline.events[settled:] == [], "the slow member lost its partitions while its callback ran"
    assert calls == ["assigned"] and a.owned() == held_by(timeline.owners(), "a")
    await a.close()
    assert calls == ["assigned", "revoked"] and a.owned() == frozenset()
    await b.close()


@pytest.mark.timeout(120)
async def test_a_frozen_member_loses_its_partitions_after_the_session_timeout(
        log: PartitionedLog, topic: str, group: str, tmp_path: Path) -> None:
    timeline = Timeline()
    frozen = FrozenMember(log, group, topic, tmp_path / "a.out")
    try:
        await frozen.wait_for(lambda owned: owned == ALL, 3 * SESSION)
        b = await joined(log, group, topic, "b", timeline.callbacks("b"))
        await timeline.wait_for(lambda owners: bool(owners), 3 * SESSION)
        mine = b.owned()
        assert mine and not mine & frozen.owned(), (mine, frozen.owned())

        frozen.proc.send_signal(signal.SIGSTOP)
        took = await timeline.wait_for(lambda owners: owners == dict.fromkeys(ALL, "b"), 4 * SESSION)
        assert took > SESSION / 2, f"took over after {took:.1f}s: sooner than a session could expire"
        assert b.owned() == ALL

        # Woken up, the frozen member learns it lost everything and says so.
        frozen.proc.send_signal(signal.SIGCONT)
        await frozen.wait_for(lambda owned: owned == frozenset(), 3 * SESSION)
        assert b.owned() == ALL
        await b.close()
    finally:
        frozen.kill()


class FrozenMember:
    """A member in a process of its own (this module as a script), its callbacks written to a file."""

    def __init__(self, log: PartitionedLog, group: str, topic: str, out: Path) -> None:
        url = str(getattr(log, "bootstrap_servers", None) or getattr(log, "dsn", ""))
        self.out = out
        out.touch()
        self.output = out.with_suffix(".log").open("wb")  # its own log, to read when a test fails
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_membership", log.engine, url, group, topic, "a",
             str(SESSION), str(out)],
            cwd=ROOT, stdout=self.output, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def owned(self) -> frozenset[int]:
        owned: set[int] = set()
        for line in self.out.read_text().splitlines():
            kind, _, listed = line.partition(" ")
            partitions = {int(p) for p in listed.split(",") if p}
            owned = owned | partitions if kind == "assigned" else owned - partitions
        return frozenset(owned)

    async def wait_for(self, check: Callable[[frozenset[int]], bool], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check(self.owned()):
            assert self.proc.poll() is None, f"the member process exited with {self.proc.returncode}"
            assert loop.time() < deadline, (f"the member process owns {sorted(self.owned())} after {timeout}s; "
                                            f"its log:\n{self.out.with_suffix('.log').read_text(errors='replace')}")
            await asyncio.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()
        self.output.close()


async def _member_main(engine: str, url: str, group: str, topic: str, member: str, session: str, out: str) -> None:
    """Run one member until killed, appending ``assigned 0,2`` / ``revoked 0,2`` lines to ``out``."""
    log: PartitionedLog
    if engine == "kafka":
        from blackboard.events.kafka import KafkaLog

        log = KafkaLog(url)
    else:
        from blackboard.events.postgres import PostgresLog

        log = PostgresLog(url)
    await log.start()

    def writer(kind: str) -> Callback:
        async def write(ps: frozenset[int]) -> None:
            with open(out, "a") as f:  # noqa: ASYNC230  # one short line, flushed at once for the test to see
                f.write(f"{kind} {','.join(map(str, sorted(ps)))}\n")

        return write

    m = log.membership(group, topic, member_id=member, session_timeout=float(session))
    await m.start(writer("assigned"), writer("revoked"))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_member_main(*sys.argv[1:8]))
