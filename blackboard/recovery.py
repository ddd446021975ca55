"""PostgreSQL going away: noticed, the embedded server started again, and liveness told when it cannot be.

A watch checks PostgreSQL on a connection of its own every second. When the check fails it restarts
the embedded server (if this process started one), retrying with backoff and jitter (``stamina``);
an external server is only waited for, since the pools reconnect by themselves. ``live()`` turns false
once PostgreSQL has been unreachable for longer than ``postgres_recovery_seconds``, so that
``/health/live`` fails and an orchestrator restarts the process.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

import asyncpg
import stamina
import structlog

from blackboard.embedded import embedded_server, restart_embedded_postgres

log = structlog.get_logger(__name__)

#: Seconds between two checks, and the longest a check may take.
CHECK_EVERY_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 2.0
#: What a failed check or a failed start raises: PostgreSQL is away, or not back yet (the wheel checks the
#: started server with ``assert``).
_DOWN = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, subprocess.SubprocessError,
         AssertionError)


class PostgresWatch:
    """Checks PostgreSQL at ``url`` until stopped; restarts it when it is the embedded one and died."""

    def __init__(self, url: str, *, recovery_seconds: float) -> None:
        self.url, self.recovery_seconds = url, recovery_seconds
        #: Since when (monotonic) PostgreSQL has not answered; ``None`` while it does.
        self.down_since: float | None = None
        self.restarts = 0

    def live(self) -> bool:
        """Whether the process may still recover by itself: PostgreSQL answers, or has not been away too long."""
        return self.down_since is None or time.monotonic() - self.down_since < self.recovery_seconds

    async def run(self) -> None:
        """Check every ``CHECK_EVERY_SECONDS`` until cancelled."""
        while True:
            if await self._answers():
                if self.down_since is not None:
                    log.info("postgres.recovered", seconds=round(time.monotonic() - self.down_since, 1),
                             restarts=self.restarts)
                self.down_since = None
            else:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning("postgres.down", embedded=embedded_server(self.url) is not None)
                try:
                    await self._recover()
                except _DOWN as exc:  # not back within the recovery time: liveness fails; keep trying
                    log.error("postgres.not_recovered", error=repr(exc), live=self.live())
            await asyncio.sleep(CHECK_EVERY_SECONDS)

    async def _answers(self) -> bool:
        try:
            conn = await asyncpg.connect(self.url, timeout=CHECK_TIMEOUT_SECONDS)
        except _DOWN:
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_SECONDS)
            return True
        except _DOWN:
            return False
        finally:
            conn.terminate()

    async def _recover(self) -> None:
        """Start the embedded server again, retrying with backoff and jitter until it answers or time runs out."""
        async for attempt in stamina.retry_context(
                on=_DOWN, attempts=None, timeout=self.recovery_seconds, wait_initial=0.2, wait_max=2.0,
                wait_jitter=0.3, name="postgres.restart"):
            with attempt:
                if not await asyncio.to_thread(restart_embedded_postgres, self.url):
                    return  # an external server: the pools reconnect once it is back
                self.restarts += 1
                if not await self._answers():
                    raise ConnectionError("the embedded PostgreSQL does not answer yet")
