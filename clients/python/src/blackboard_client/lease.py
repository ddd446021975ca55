"""Leases held for the length of a ``with`` block, renewed in the background, with their fencing token.

Acquire on entry (``Rejected`` with ``lease_held`` when another holds it), renew every third of the
TTL, release on exit. A renewal refused with ``lease_lost`` (the lease ran out while this process was
paused, say) sets ``lost``: code acting under the token checks ``lease.check()`` (or ``lost``) before
each write it fences, and whatever it writes to refuses the stale token anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from blackboard_client.commands import AcquireLease, ReleaseLease, RenewLease
from blackboard_client.errors import BlackboardError, LeaseLost, Rejected
from blackboard_client.models import Accepted

if TYPE_CHECKING:
    from blackboard_client.aio import AsyncClient
    from blackboard_client.client import Client

log = logging.getLogger("blackboard_client.lease")


def token_of(outcome: Any) -> int:
    """The fencing token a lease command's answer carries (in its granted or renewed event)."""
    if not isinstance(outcome, Accepted):
        raise BlackboardError(f"a lease command answered {outcome!r}, not an acceptance")
    for event in reversed(outcome.events):
        if isinstance(event.payload, dict) and "token" in event.payload:
            return int(event.payload["token"])
    raise BlackboardError(f"the lease answer of {outcome.command_id} carries no token")


class _LeaseState:
    def __init__(self, name: str, holder: str, ttl: int) -> None:
        self.name, self.holder, self.ttl = name, holder, ttl
        self.stream = f"lease:{name}"
        self.token = 0
        self.lost = False

    def check(self) -> None:
        """Raise ``LeaseLost`` when a renewal was refused."""
        if self.lost:
            raise LeaseLost(f"lease {self.name!r} (token {self.token}) is no longer held by {self.holder!r}")


class Lease(_LeaseState):
    """The synchronous lease of ``Client.lease``."""

    def __init__(self, client: Client, name: str, holder: str, ttl: int) -> None:
        super().__init__(name, holder, ttl)
        self.client = client
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.token = token_of(self.client.send("lease.acquire", self.stream,
                                               AcquireLease(holder=self.holder, ttl_seconds=self.ttl)))
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.name}", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.client.send("lease.renew", self.stream,
                                 RenewLease(holder=self.holder, token=self.token, ttl_seconds=self.ttl))
            except Rejected as exc:
                log.warning("lease %s lost: %s", self.name, exc)
                self.lost = True
                return
            except BlackboardError as exc:  # the next turn tries again, while the TTL lasts
                log.warning("lease %s not renewed: %r", self.name, exc)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if not self.lost:
            with contextlib.suppress(Rejected):
                self.client.send("lease.release", self.stream, ReleaseLease(holder=self.holder, token=self.token))


class AsyncLease(_LeaseState):
    """The asynchronous lease of ``AsyncClient.lease``."""

    def __init__(self, client: AsyncClient, name: str, holder: str, ttl: int) -> None:
        super().__init__(name, holder, ttl)
        self.client = client
        self._renewer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncLease:
        self.token = token_of(await self.client.send("lease.acquire", self.stream,
                                                     AcquireLease(holder=self.holder, ttl_seconds=self.ttl)))
        self._renewer = asyncio.create_task(self._renew(), name=f"lease-{self.name}")
        return self

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.client.send("lease.renew", self.stream,
                                       RenewLease(holder=self.holder, token=self.token, ttl_seconds=self.ttl))
            except Rejected as exc:
                log.warning("lease %s lost: %s", self.name, exc)
                self.lost = True
                return
            except BlackboardError as exc:
                log.warning("lease %s not renewed: %r", self.name, exc)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        if not self.lost:
            with contextlib.suppress(Rejected):
                await self.client.send("lease.release", self.stream,
                                       ReleaseLease(holder=self.holder, token=self.token))
