"""Reads of the agent cluster from the read model: claim candidates, nodes, task statistics, sagas."""

from __future__ import annotations

from typing import Any

import asyncpg

from blackboard.schemas.auth import DEFAULT_TENANT
from blackboard.schemas.cluster_views import NodeView, SagaView, TaskStats, Throughput
from blackboard.schemas.tenancy import SEPARATOR, id_prefix

# Pending, due, of the node's tenant ($4: its ids' prefix, "" for the default tenant, whose ids have none) and
# asking only for skills the node offers; in claim order (the partial index's order).
_CANDIDATES = f"""
SELECT id, version FROM tasks
WHERE status = 'pending' AND (not_before IS NULL OR not_before <= now())
  AND CASE WHEN $4::text = '' THEN strpos(id, '{SEPARATOR}') = 0 ELSE starts_with(id, $4) END
  AND required_skills <@ $1::text[] AND NOT (id = ANY($3::text[]))
ORDER BY priority DESC, created_at, id
LIMIT $2"""

# A tenant's nodes hold its tasks only (a claim names the node of the claimer's tenant): the count needs no
# confining of its own. $5 is the tenant.
_NODES = """
SELECT n.*, coalesce(a.active, 0) AS active FROM nodes n
LEFT JOIN (SELECT node, count(*) AS active FROM tasks WHERE status IN ('claimed', 'running') AND node IS NOT NULL
           GROUP BY node) a ON a.node = n.id
WHERE ($1::text IS NULL OR n.status = $1) AND ($2::text IS NULL OR $2 = ANY(n.skills))
  AND ($3::text IS NULL OR n.id = $3) AND n.tenant = $5
ORDER BY n.id
LIMIT $4"""

_STATS = """
SELECT GROUPING(type, node) AS g, status, type, node, count(*) AS n FROM tasks WHERE tenant = $1
GROUP BY GROUPING SETS ((status), (type, status), (node, status))"""
_FINISHED = """
SELECT status, count(*) AS n FROM tasks
WHERE finished_at > now() - make_interval(secs => $1) AND tenant = $2 GROUP BY status"""


async def claim_candidates(pool: asyncpg.Pool, skills: list[str], limit: int,
                           exclude: list[str], *, tenant: str) -> list[tuple[str, int]]:
    """(stored id, version) of ``tenant``'s tasks a node offering ``skills`` may claim, in the order to try them."""
    rows = await pool.fetch(_CANDIDATES, skills, limit, exclude, id_prefix(tenant))
    return [(r["id"], r["version"]) for r in rows]


def _node_view(r: Any) -> NodeView:
    return NodeView(r["id"], r["hostname"], r["platform"], list(r["skills"]), r["capacity"], r["status"],
                    r["reported_status"], r["load"], r["ttl_seconds"], r["last_seen"], r["active"],
                    max(0, r["capacity"] - r["active"]) if r["status"] == "online" else 0, r["version"],
                    r["created_at"], r["updated_at"])


async def nodes(pool: asyncpg.Pool, *, status: str | None = None, skill: str | None = None,
                available: bool = False, node_id: str | None = None, limit: int = 1000,
                tenant: str = DEFAULT_TENANT) -> list[NodeView]:
    """``tenant``'s nodes (``node_id``: a stored id)."""
    views = [_node_view(r) for r in await pool.fetch(_NODES, status, skill, node_id, limit, tenant)]
    return [v for v in views if v.available > 0] if available else views


async def task_stats(pool: asyncpg.Pool, window_seconds: int, *, tenant: str = DEFAULT_TENANT) -> TaskStats:
    """The counts of ``tenant``'s tasks; nodes are named by their stored ids."""
    by_status: dict[str, int] = {}
    by_type: dict[str, dict[str, int]] = {}
    by_node: dict[str, dict[str, int]] = {}
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        for r in await conn.fetch(_STATS, tenant):
            # GROUPING: 3 → the (status) set, 1 → (type, status), 2 → (node, status).
            if r["g"] == 3:
                by_status[r["status"]] = r["n"]
            elif r["g"] == 1:
                by_type.setdefault(r["type"], {})[r["status"]] = r["n"]
            elif r["node"] is not None:
                by_node.setdefault(r["node"], {})[r["status"]] = r["n"]
        finished = {r["status"]: r["n"] for r in await conn.fetch(_FINISHED, float(window_seconds), tenant)}
    done = finished.get("succeeded", 0)
    return TaskStats(sum(by_status.values()), by_status, by_type, by_node,
                     Throughput(window_seconds, done, finished.get("failed", 0), finished.get("cancelled", 0),
                                round(done / (window_seconds / 60), 3)))


async def saga(pool: asyncpg.Pool, saga_id: str) -> SagaView | None:
    """The saga of the stored id ``saga_id``."""
    r = await pool.fetchrow("SELECT * FROM sagas WHERE id = $1", saga_id)
    if r is None:
        return None
    return SagaView(r["id"], r["project_id"], r["status"], list(r["steps"]), r["reason"], r["deadline"], r["version"],
                    r["created_at"], r["updated_at"])
