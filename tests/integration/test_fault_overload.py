"""Four times the sustainable command rate from many clients, on hot projects whose budgets run out: only 200, 409
and 429 (with ``Retry-After``), no 5xx; nothing acknowledged lost or doubled, nothing refused appended, no budget
ever above its total, the read models equal to a rebuild of the log, and the service answering again by itself.

The sustainable rate is the one the service admits (``BLACKBOARD_RATE_LIMIT_PER_SECOND``): a fixed, known
number on any machine, where a measured one would move with the machine's load. The burst lasts
``BURST_SECONDS``; the nightly run sets ``BLACKBOARD_OVERLOAD_SECONDS=60``.

The process's resident memory stays flat under the burst: measured once the first third has warmed up
(connections, caches, the allocator's arenas) and at its end, it may grow by at most ``RSS_GROWTH_MIB``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

import httpx

from tests.integration.faults import RECOVERY_SECONDS, Outcomes, check_invariants, cost, send_until_decided
from tests.integration.harness import serving, settings_for

RATE = 20
BURST_SECONDS = float(os.environ.get("BLACKBOARD_OVERLOAD_SECONDS", "2"))
CLIENTS = 16
PROJECTS = 3
#: Enough for 5 costs of 0.01 each: what is admitted usually spends it, and more (I6 is checked on the log).
BUDGET = "0.05"
#: Growth of the resident memory allowed from the warm-up third of the burst to its end. The server, its
#: projector and the clients all run in this process, so the clients' records of what they sent count too.
#: Measured: 2 MiB over the last 13 s of a 20 s burst. The nightly 60 s burst measures 40 s, 3,200 requests:
#: a leak of 11 KiB a request fails it.
RSS_GROWTH_MIB = 32
#: The bound is enforced only on a burst at least this long: a 2 s burst's growth is mostly warm-up.
RSS_CHECKED_FROM_SECONDS = 20.0


async def _create(client: httpx.AsyncClient) -> None:
    for p in range(PROJECTS):
        while True:  # the limiter counts these too
            made = await client.post("/v1/commands", json={"type": "project.create", "stream": f"project:p-{p}",
                                                           "payload": {"title": "t", "currency": "EUR",
                                                                       "budget_total": BUDGET}})
            if made.status_code != 429:
                break
            await asyncio.sleep(float(made.headers["retry-after"]))
        assert made.status_code == 200, made.text


async def _client(url: str, name: str, seen: Outcomes, deadline: float) -> None:
    """Open loop: a command every ``CLIENTS / (4 * RATE)`` s whatever the answers; a 429 is not retried."""
    period = CLIENTS / (4 * RATE)
    sent: list[asyncio.Task[int]] = []
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        n, start = 0, time.monotonic()
        while time.monotonic() < start + BURST_SECONDS:
            body = cost(f"{name}-{n}", n % PROJECTS)
            sent.append(asyncio.create_task(send_until_decided(client, body, seen, deadline, retry_429=False)))
            n += 1
            await asyncio.sleep(max(0.0, start + n * period - time.monotonic()))
        await asyncio.gather(*sent)


def resident_mib() -> float:
    """This process's resident memory (``/proc/self/statm``), in MiB, after a full collection."""
    gc.collect()
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _load(url: str, seen: Outcomes, deadline: float) -> tuple[float, float]:
    """The burst from every client; the resident memory once its first third has passed, and at its end."""
    burst = asyncio.gather(*(_client(url, f"c{i}", seen, deadline) for i in range(CLIENTS)))
    await asyncio.sleep(BURST_SECONDS / 3)
    warm = resident_mib()
    await burst
    return warm, resident_mib()


async def test_four_times_the_admitted_rate(pg_url: str, topic_prefix: str, redis_url: str, redis_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, redis_url=redis_url,
                            redis_prefix=redis_prefix, rate_limit_per_second=RATE)
    seen = Outcomes()
    async with serving(settings) as (client, _, url):
        await _create(client)
        deadline = time.monotonic() + BURST_SECONDS + RECOVERY_SECONDS
        warm, end = await _load(url, seen, deadline)
        assert set(seen.statuses) <= {200, 409, 429}, seen.statuses
        # The excess is turned away; what is admitted is decided (a budget spent answers 409, no 5xx).
        assert seen.statuses[429] > 0 and seen.statuses[200] > 0, seen.statuses
        assert seen.without_retry_after == 0
        # Recovery by itself: once the window has passed, requests are admitted again.
        ended = time.monotonic()
        while (again := await client.get("/v1/projects/p-0")).status_code == 429:
            await asyncio.sleep(float(again.headers["retry-after"]))
        recovered = time.monotonic() - ended
        assert again.status_code == 200 and recovered < RECOVERY_SECONDS, again.text
        caught_up = await check_invariants(settings, pg_url, set(seen.acked), seen.refused)
    offered = len(seen.sent) / BURST_SECONDS
    print(f"\nfault=overload offered_per_s={offered:.0f} admitted_per_s={RATE} burst_s={BURST_SECONDS} "
          f"statuses={dict(seen.statuses)} admitted_again_after_s={recovered:.2f} lag_zero_after_s={caught_up:.2f} "
          f"rss_warm_mib={warm:.1f} rss_end_mib={end:.1f}")
    if BURST_SECONDS >= RSS_CHECKED_FROM_SECONDS:
        assert end - warm < RSS_GROWTH_MIB, f"resident memory grew {end - warm:.1f} MiB under the burst"
