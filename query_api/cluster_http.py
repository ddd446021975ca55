"""HTTP reads of the agent cluster: nodes (online, available, by skill), task statistics, sagas.

Each is of the caller's tenant only: ids it names are scoped to it, and lists and counts hold its rows alone.
"""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from blackboard.query_api import cluster
from blackboard.query_api.http import EntityId, Token, consistent_reads
from blackboard.schemas.auth import Principal
from blackboard.schemas.cluster_views import NodeList, NodeView, SagaView, TaskStats
from blackboard.schemas.errors import NotFound
from blackboard.schemas.tenancy import scope_id


@get("/v1/nodes", summary="Nodes: online, available (capacity left), by skill", tags=["nodes"])
async def list_nodes(
    request: Request[None, None, State], principal: NamedDependency[Principal],
    status: Annotated[Literal["online", "offline", "deregistered"] | None,
                      QueryParameter(description="only nodes in this status")] = None,
    # A skill is an identifier (schemas.types.Skill): anything else names no node, and NUL would reach SQL.
    skill: Annotated[str | None, QueryParameter(description="only nodes offering this skill", min_length=1,
                                                max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")] = None,
    available: Annotated[bool, QueryParameter(description="only online nodes with capacity left")] = False,
    consistent_with: Token = None,
) -> NodeList:
    reads = await consistent_reads(request, consistent_with)
    return NodeList(await cluster.nodes(reads.pool, status=status, skill=skill, available=available,
                                        tenant=principal.tenant))


@get("/v1/nodes/{node_id:str}", summary="A node, with the tasks it holds and its capacity left", tags=["nodes"])
async def get_node(request: Request[None, None, State], principal: NamedDependency[Principal], node_id: EntityId,
                   consistent_with: Token = None) -> NodeView:
    reads = await consistent_reads(request, consistent_with)
    stored = scope_id(principal.tenant, node_id)
    found = await cluster.nodes(reads.pool, node_id=stored, limit=1, tenant=principal.tenant)
    if not found:
        raise NotFound(f"node {stored!r} is not registered", code="node_not_found")
    return found[0]


@get("/v1/task-stats", summary="Task counts by status, type and node; throughput over a window", tags=["tasks"])
async def get_task_stats(
    request: Request[None, None, State], principal: NamedDependency[Principal],
    window_seconds: Annotated[int, QueryParameter(ge=1, le=30 * 86_400,
                                                  description="throughput window, seconds")] = 3600,
    consistent_with: Token = None,
) -> TaskStats:
    reads = await consistent_reads(request, consistent_with)
    return await cluster.task_stats(reads.pool, window_seconds, tenant=principal.tenant)


@get("/v1/sagas/{saga_id:str}", summary="A saga: where it stands and the steps it took", tags=["sagas"])
async def get_saga(request: Request[None, None, State], principal: NamedDependency[Principal], saga_id: EntityId,
                   consistent_with: Token = None) -> SagaView:
    reads = await consistent_reads(request, consistent_with)
    stored = scope_id(principal.tenant, saga_id)
    found = await cluster.saga(reads.pool, stored)
    if found is None:
        raise NotFound(f"saga {stored!r} does not exist", code="saga_not_found")
    return found


ROUTES = [list_nodes, get_node, get_task_stats, get_saga]
