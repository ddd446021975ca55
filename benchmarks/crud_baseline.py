"""The CRUD blackboard that Blackboard replaces, small and faithful: the baseline of ``--suite compare``.

What users run today: one JSONB row per project with a version column; a command reads the row,
checks its rule (the budget), writes the row back only if the version is still the one it read
(optimistic concurrency, retried on a conflict), inserts a change-log row in the same transaction,
and after the commit SETs the document in Redis. No HTTP: it is called in process, so any HTTP
figure of Blackboard is compared with a baseline that pays nothing for a transport.
"""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

SCHEMA = """
CREATE TABLE IF NOT EXISTS crud_projects (id text PRIMARY KEY, doc jsonb NOT NULL, version integer NOT NULL);
CREATE TABLE IF NOT EXISTS crud_change_log (
    id bigserial PRIMARY KEY, project_id text NOT NULL, version integer NOT NULL, change jsonb NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
TRUNCATE crud_projects, crud_change_log;
"""


class BudgetExceeded(Exception):
    """The rule refused the cost."""


class CrudBlackboard:
    """``add_cost`` the way a hand-written CRUD blackboard does it, on asyncpg and redis-py."""

    def __init__(self, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.pool = pool
        self.redis = redis
        self.conflicts = 0

    async def setup(self, projects: list[str]) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(SCHEMA)
            doc = msgspec.json.encode({"budget_total": "999999999.00", "spent": "0"}).decode()
            await conn.executemany("INSERT INTO crud_projects VALUES ($1, $2::jsonb, 1)", [(p, doc) for p in projects])

    async def add_cost(self, project: str, amount: Decimal) -> int:
        """Charge ``amount``; the new version. Retries while another writer got there first."""
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow("SELECT doc::text, version FROM crud_projects WHERE id = $1", project)
                doc: dict[str, Any] = msgspec.json.decode(row["doc"])
                spent = Decimal(doc["spent"]) + amount
                if spent > Decimal(doc["budget_total"]):
                    raise BudgetExceeded(project)
                doc["spent"] = str(spent)
                text = msgspec.json.encode(doc).decode()
                version: int = row["version"] + 1
                done = await conn.execute("UPDATE crud_projects SET doc = $2::jsonb, version = $3 "
                                          "WHERE id = $1 AND version = $4", project, text, version, row["version"])
                if done == "UPDATE 1":
                    change = msgspec.json.encode({"op": "add_cost", "amount": str(amount)}).decode()
                    await conn.execute("INSERT INTO crud_change_log (project_id, version, change) "
                                       "VALUES ($1, $2, $3::jsonb)", project, version, change)
            if done == "UPDATE 1":
                await self.redis.set(f"crud:project:{project}", text)
                return version
            self.conflicts += 1


async def drive(crud: CrudBlackboard, projects: list[str], clients: int, total: int) -> tuple[float, list[float]]:
    """``total`` add_cost calls from ``clients`` concurrent tasks; (elapsed seconds, latencies)."""
    latencies: list[float] = []
    todo = iter(range(total))

    async def client() -> None:
        rng = random.Random()
        for _ in todo:
            t0 = time.perf_counter()
            await crud.add_cost(rng.choice(projects), Decimal("0.01"))
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - t0, latencies
