"""The offline spool: commands kept on disk while the server is down, through a kill -9 of the client,
delivered once each and in order when it is back; a full spool refuses and drops nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from blackboard_client import AsyncClient, Client, Spooled, SpoolFull, SpoolInUse, SpoolRejection
from blackboard_client.spool import Spool

from tests.integration.harness import Process
from tests.sdk.proxy import Proxy
from tests.sdk.spool_writer import command
from tests.services import free_port

WRITER = Path(__file__).with_name("spool_writer.py")
TOTAL = 200


def _spool_until_killed(url: str, path: Path, after_lines: int) -> list[str]:
    """Run the writer; kill -9 it once it printed ``after_lines`` ids; the ids it printed."""
    proc = subprocess.Popen([sys.executable, str(WRITER), url, str(path), "0", str(TOTAL), "0.01"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    printed: list[str] = []
    while len(printed) < after_lines:
        line = proc.stdout.readline()
        assert line, f"the writer ended early ({proc.wait()})"
        printed.append(line.strip())
    proc.kill()
    proc.wait()
    printed += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
    proc.stdout.close()
    return printed


def _spool_the_rest(url: str, path: Path) -> tuple[list[Spooled], float]:
    """A new client on the same spool sends the rest; everything it holds, and its spooling rate."""
    with Client(url, spool=path, deadline=2, flush_interval=3600) as bb:
        held = bb.spooled()
        start = int(held[-1].command_id.removeprefix("spool-")) + 1
        began = time.perf_counter()
        for i in range(start, TOTAL):
            type_, stream, payload = command(i)
            assert isinstance(bb.send(type_, stream, payload, command_id=f"spool-{i}"), Spooled)
        rate = (TOTAL - start) / (time.perf_counter() - began)
        return bb.spooled(), rate


def _flush(url: str, path: Path) -> tuple[bool, float, list[SpoolRejection]]:
    """Deliver four streams at once: each stream's order must hold all the same."""
    with Client(url, spool=path, flush_concurrency=4) as bb:
        began = time.perf_counter()
        done = bb.flush()
        rate = TOTAL / (time.perf_counter() - began)
        return done and not bb.spooled(), rate, bb.rejected()


@pytest.mark.slow
async def test_spooled_commands_survive_kill_minus_nine_and_are_applied_once_in_order(
        pg_url: str, topic_prefix: str, tmp_path: Path) -> None:
    port = free_port()
    url, path = f"http://127.0.0.1:{port}", tmp_path / "spool.db"
    printed = await asyncio.to_thread(_spool_until_killed, url, path, 80)
    assert len(printed) >= 80
    held, spool_rate = await asyncio.to_thread(_spool_the_rest, url, path)
    assert [s.command_id for s in held] == [f"spool-{i}" for i in range(TOTAL)]
    assert set(printed) <= {s.command_id for s in held}, "every Spooled the killed client saw is still there"

    server = Process({"BLACKBOARD_POSTGRES_URL": pg_url, "BLACKBOARD_TOPIC_PREFIX": topic_prefix,
                      "BLACKBOARD_PARTITIONS": "4"}, port)
    try:
        await server.ready()
        emptied, flush_rate, rejected = await asyncio.to_thread(_flush, url, path)
        assert emptied and rejected == []
        await _assert_applied_once_in_order(url)
    finally:
        server.stop()
    print(f"spool: {spool_rate:.0f} commands/s spooled, {flush_rate:.0f} commands/s flushed")


async def _assert_applied_once_in_order(url: str) -> None:
    expected: dict[str, list[str]] = defaultdict(list)
    for i in range(TOTAL):
        expected[command(i)[1]].append(f"spool-{i}")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for stream, ids in expected.items():
            items = (await http.get(f"/v1/streams/{stream}/history", params={"page_size": 500})).json()["items"]
            applied = [e["command_id"] for e in items if e["type"] in ("project.created", "project.cost_added")]
            assert applied == ids, stream


def _spool_a_full_spool(url: str, path: Path) -> list[str]:
    with Client(url, spool=Spool(path, max_commands=5), deadline=1, flush_interval=3600) as bb:
        bb.send("project.create", "project:f-1", {"title": "f", "currency": "EUR", "budget_total": "1.00"},
                command_id="full-0")
        bb.send("project.add_cost", "project:f-1", {"amount": "5.00", "reason": "refused"}, command_id="full-1")
        for i in range(2, 5):
            bb.send("project.add_cost", "project:f-1", {"amount": "0.10", "reason": f"{i}"}, command_id=f"full-{i}")
        with pytest.raises(SpoolFull):
            bb.send("project.add_cost", "project:f-1", {"amount": "0.10", "reason": "5"}, command_id="full-5")
        with pytest.raises(SpoolInUse):
            Spool(path)
        return [s.command_id for s in bb.spooled()]


def _deliver(url: str, path: Path) -> tuple[list[SpoolRejection], list[SpoolRejection], str]:
    told: list[SpoolRejection] = []
    with Client(url, spool=path, on_rejected=told.append) as bb:
        assert bb.flush() and bb.spooled() == []
        return told, bb.rejected(), bb.budget("f-1")["spent"]


async def test_a_full_spool_refuses_drops_nothing_and_reports_rejections_met_on_delivery(
        served: tuple[httpx.AsyncClient, object, str], tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    held = await asyncio.to_thread(_spool_a_full_spool, f"http://127.0.0.1:{free_port()}", path)
    assert held == [f"full-{i}" for i in range(5)], "full: the sixth refused, the five kept"
    told, rejected, spent = await asyncio.to_thread(_deliver, served[2], path)
    assert [r.command_id for r in told] == [r.command_id for r in rejected] == ["full-1"]
    assert rejected[0].code == "budget_exceeded" and rejected[0].payload["reason"] == "refused"
    assert spent == "0.30", "the commands after the refused one were delivered"


def test_the_spool_is_bounded_by_bytes_and_keeps_one_entry_per_command_id(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=100)
    try:
        first = spool.put("a", "t", "s:1", b"x" * 60)
        assert spool.put("a", "t", "s:1", b"y" * 60) == first
        with pytest.raises(SpoolFull) as full:
            spool.put("b", "t", "s:1", b"x" * 60)
        assert (full.value.count, full.value.size) == (1, 60)
        assert [e.body for e in spool.head()] == [b"x" * 60]
    finally:
        spool.close()


async def test_the_async_client_spools_while_down_and_delivers_in_the_background_once_up(
        served: tuple[httpx.AsyncClient, object, str], tmp_path: Path) -> None:
    raw, _, url = served
    proxy = Proxy(free_port())  # nothing listens behind it yet: every connection is reset
    via = await proxy.start()
    try:
        async with AsyncClient(via, spool=tmp_path / "spool.db", deadline=1, flush_interval=0.2) as bb:
            answers = [await bb.send("project.create", "project:bg-1",
                                     {"title": "bg", "currency": "EUR", "budget_total": "10.00"})]
            answers += [await bb.send("project.add_cost", "project:bg-1", {"amount": "1.00", "reason": f"{i}"})
                        for i in range(5)]
            assert all(isinstance(a, Spooled) for a in answers)
            assert [s.command_id for s in await bb.spooled()] == [a.command_id for a in answers]
            proxy.upstream = int(url.rsplit(":", 1)[1])  # the server answers from now on
            deadline = time.monotonic() + 30
            while await bb.spooled():
                assert time.monotonic() < deadline, "the background delivery did not empty the spool"
                await asyncio.sleep(0.1)
            assert (await bb.budget("bg-1"))["spent"] == "5.00"
    finally:
        await proxy.stop()
    history = (await raw.get("/v1/streams/project:bg-1/history")).json()["items"]
    assert [e["command_id"] for e in history[:6]] == [a.command_id for a in answers]
