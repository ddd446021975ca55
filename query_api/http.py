"""HTTP reads. A read that carries a command's ``position`` (header ``Blackboard-Consistency`` or
query ``consistent_with``) waits until the read models have passed it, so a client reads its writes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from blackboard.query_api.reads import MAX_PAGE, ReadService
from blackboard.schemas.auth import Principal
from blackboard.schemas.errors import ServiceUnavailable
from blackboard.schemas.tenancy import scope_id
from blackboard.schemas.views import Page

JSON = "application/json"
TaskStatusFilter = Literal["pending", "claimed", "running", "succeeded", "failed", "cancelled"]
EntityId = Annotated[str, PathParameter(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
PageSize = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="items per page")]
Token = Annotated[str | None, QueryParameter(description="a command's position: wait until reads have passed it")]
Cursor = Annotated[str | None, QueryParameter(description="next_cursor of the previous page")]
StatusFilter = Annotated[TaskStatusFilter | None, QueryParameter(description="only tasks in this status")]
Stream = Annotated[str, PathParameter(min_length=3, max_length=300, description="'<category>:<id>'")]
AfterVersion = Annotated[int, QueryParameter(ge=0, le=2**53, description="the last version seen")]


def token_of(request: Request[Any, Any, State], consistent_with: str | None) -> str | None:
    """The consistency token of a read: the query parameter, else the ``Blackboard-Consistency`` header."""
    return consistent_with or request.headers.get("blackboard-consistency")


def reads_of(request: Request[Any, Any, State]) -> ReadService:
    """The runtime's read service of the moment (it is swapped when a rebuilt generation goes live); 503
    ``not_started`` while the process has none yet."""
    service: ReadService | None = request.app.state.runtime.reads
    if service is None:
        raise ServiceUnavailable("the read side is not started yet; retry", code="not_started")
    return service


async def consistent_reads(request: Request[Any, Any, State], consistent_with: str | None) -> ReadService:
    """The read service, once the read models have reached the request's consistency token (if it has one)."""
    reads = reads_of(request)
    await reads.wait_consistent(token_of(request, consistent_with))
    return reads


@get("/v1/projects/{project_id:str}", summary="A project with its budget and shots", tags=["projects"])
async def get_project(request: Request[None, None, State], principal: NamedDependency[Principal], project_id: EntityId,
                      consistent_with: Token = None) -> Response[bytes]:
    doc = await reads_of(request).project(scope_id(principal.tenant, project_id), token_of(request, consistent_with))
    return Response(doc, media_type=JSON)


@get("/v1/tasks/{task_id:str}", summary="A task", tags=["tasks"])
async def get_task(request: Request[None, None, State], principal: NamedDependency[Principal], task_id: EntityId,
                   consistent_with: Token = None) -> Response[bytes]:
    doc = await reads_of(request).task(scope_id(principal.tenant, task_id), token_of(request, consistent_with))
    return Response(doc, media_type=JSON)


@get("/v1/tasks", summary="Tasks: sorted, filtered, cursor-paged, with fields=", tags=["tasks"])
async def list_tasks(
    request: Request[None, None, State], principal: NamedDependency[Principal],
    status: Annotated[str | None, QueryParameter(description="only tasks in this status")] = None,
    name: Annotated[str | None, QueryParameter(description="only tasks of this name")] = None,
    priority_min: Annotated[str | None, QueryParameter(description="priority >= this integer")] = None,
    priority_max: Annotated[str | None, QueryParameter(description="priority <= this integer")] = None,
    created_after: Annotated[str | None, QueryParameter(description="created after this ISO 8601 time")] = None,
    created_before: Annotated[str | None, QueryParameter(description="created before this ISO 8601 time")] = None,
    updated_after: Annotated[str | None, QueryParameter(description="updated after this ISO 8601 time")] = None,
    type: Annotated[str | None, QueryParameter(description="only tasks of this type")] = None,
    user: Annotated[str | None, QueryParameter(description="only tasks of this user")] = None,
    parent: Annotated[str | None, QueryParameter(description="only subtasks of this task")] = None,
    node: Annotated[str | None, QueryParameter(description="only tasks this node holds (claimed or running)")] = None,
    sort: Annotated[str | None, QueryParameter(
        description="keys among id, created_at, updated_at, priority, name, status; '-' for descending; "
                    "default 'created_at' (oldest first); id breaks ties")] = None,
    fields: Annotated[str | None, QueryParameter(description="only these fields, e.g. 'id,status,payload.a'")] = None,
    page_size: PageSize = 50, cursor: Cursor = None, consistent_with: Token = None,
) -> Page:
    """422 ``invalid_sort``, ``invalid_filter``, ``invalid_cursor`` or ``unknown_field`` name the parameter at fault."""
    given = {"status": status, "name": name, "priority_min": priority_min, "priority_max": priority_max,
             "created_after": created_after, "created_before": created_before, "updated_after": updated_after,
             "type": type, "user": user,
             # Another task and a node are named as the caller's tenant names them; the rows hold stored ids.
             "parent": None if parent is None else scope_id(principal.tenant, parent),
             "node": None if node is None else scope_id(principal.tenant, node)}
    return await reads_of(request).tasks(sort=sort, filters={k: v for k, v in given.items() if v is not None},
                                       page_size=page_size, cursor=cursor, fields=fields,
                                       token=token_of(request, consistent_with), tenant=principal.tenant)


ROUTES = [get_project, get_task, list_tasks]
