"""Fair rate limits: requests per second per principal and per tenant, in fixed one-second windows.

With Redis configured the counts live there (one Lua script per request increments both counters and sets their
expiry), so every process of a deployment shares them; without Redis, or while it does not answer, each process
counts for itself (N processes then allow up to N times the limit). A tenant's counter is its own: a flood from
one tenant fills only its window, never another's.

A count only grows within its window, so once a process has seen a tenant's count over the limit it refuses that
tenant's further requests of the window at once, without asking Redis: each of them would have been refused
anyway, and the counts they no longer add belong to that tenant's windows alone. A flood is then answered at the
cost of the HTTP stack, not of a Redis round trip per request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from blackboard.schemas.auth import Principal
from blackboard.schemas.errors import ApiError

log = structlog.get_logger(__name__)

#: KEYS: the counters; ARGV[1]: the window's length in ms. Each counter is incremented and, when new, given the
#: window's expiry (a little longer than the window, for clocks that differ); the answer is every count.
_INCREMENT = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCR', key)
  if counts[i] == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
end
return counts
"""

WINDOW_SECONDS = 1


class RateLimited(ApiError):
    """429: a principal's or a tenant's requests of this second are used up; ``Retry-After`` says when to retry."""

    status, code = 429, "rate_limited"


@dataclass
class Limits:
    """The per-second limits; ``None``: that one is not limited."""

    per_principal: int | None
    per_tenant: int | None

    @property
    def any(self) -> bool:
        return self.per_principal is not None or self.per_tenant is not None


@dataclass
class _Window:
    started: int
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Full:
    """The buckets seen over their limit in one window (a count never goes down within its window)."""

    window: int
    names: set[str] = field(default_factory=set)


class RateLimiter:
    """Counts a request against its principal's and its tenant's window; raises ``RateLimited`` over either."""

    def __init__(self, limits: Limits, redis: Callable[[], aioredis.Redis | None], prefix: str) -> None:
        self.limits, self._redis, self._prefix = limits, redis, prefix
        self._window = _Window(0)
        self._full = _Full(0)

    async def check(self, principal: Principal, who: str) -> None:
        """Count one request of ``principal`` (``who``: its rate-limit identity, e.g. the client address of an
        anonymous caller); raise ``RateLimited`` when it is over a limit."""
        if not self.limits.any:
            return
        buckets = self._buckets(principal, who)
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        if self._full.window != window:
            self._full = _Full(window)
        # The last bucket is the widest (the tenant's when there is one): once it is full, every request it
        # holds is refused for the rest of the window, and skipping its counts changes no other bucket's.
        kind, name, limit = buckets[-1]
        if name in self._full.names:
            raise _refusal(kind, limit, window, now)
        counts = await self._count_shared(buckets, window)
        if counts is None:
            counts = self._count_here(buckets, window)
        if counts[-1] > limit:
            self._full.names.add(name)
        for (kind, _, limit), count in zip(buckets, counts, strict=True):
            if count > limit:
                raise _refusal(kind, limit, window, now)

    def _buckets(self, principal: Principal, who: str) -> list[tuple[str, str, int]]:
        """The windows a request of ``principal`` counts in: (kind, name, limit), the widest last."""
        buckets = []
        if self.limits.per_principal is not None:
            buckets.append(("principal", f"p:{principal.tenant}:{who}", self.limits.per_principal))
        if self.limits.per_tenant is not None:
            buckets.append(("tenant", f"t:{principal.tenant}", self.limits.per_tenant))
        return buckets

    async def _count_shared(self, buckets: list[tuple[str, str, int]], window: int) -> list[int] | None:
        """The counts in Redis, or ``None`` without Redis or when it fails (then this process counts)."""
        client = self._redis()
        if client is None:
            return None
        keys = [f"{self._prefix}rl:{name}:{window}" for _, name, _ in buckets]
        try:
            answer = await client.eval(_INCREMENT, len(keys), *keys, WINDOW_SECONDS * 1000 + 250)
        except (RedisError, OSError) as exc:
            log.warning("rate_limit.redis_failed", error=repr(exc))
            return None
        return [int(c) for c in answer[: len(keys)]]

    def _count_here(self, buckets: list[tuple[str, str, int]], window: int) -> list[int]:
        if self._window.started != window:
            self._window = _Window(window)  # the last second's counts are dropped whole
        counts = self._window.counts
        for _, name, _ in buckets:
            counts[name] = counts.get(name, 0) + 1
        return [counts[name] for _, name, _ in buckets]


def _refusal(kind: str, limit: int, window: int, now: float) -> RateLimited:
    retry = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
    return RateLimited(f"too many requests for this {kind}: the limit is {limit} per second",
                       headers={"Retry-After": str(retry)})
