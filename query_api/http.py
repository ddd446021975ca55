"""HTTP reads. A read that carries a command's ``position`` (header ``Blackboard-Consistency`` or
query ``consistent_with``) waits until the read models have passed it, so a client reads its writes."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from blackboard.query_api.reads import MAX_PAGE, ReadService, stream_exists_check
from blackboard.schemas.auth import Principal
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


def _token(request: Request[None, None, State], consistent_with: str | None) -> str | None:
    return consistent_with or request.headers.get("blackboard-consistency")


def _reads(request: Request[None, None, State]) -> ReadService:
    service: ReadService = request.app.state.runtime.reads
    return service


@get("/v1/projects/{project_id:str}", summary="A project with its budget and shots", tags=["projects"])
async def get_project(request: Request[None, None, State], principal: NamedDependency[Principal], project_id: EntityId,
                      consistent_with: Token = None) -> Response[bytes]:
    doc = await _reads(request).project(project_id, _token(request, consistent_with))
    return Response(doc, media_type=JSON)


@get("/v1/tasks/{task_id:str}", summary="A task", tags=["tasks"])
async def get_task(request: Request[None, None, State], principal: NamedDependency[Principal], task_id: EntityId,
                   consistent_with: Token = None) -> Response[bytes]:
    doc = await _reads(request).task(task_id, _token(request, consistent_with))
    return Response(doc, media_type=JSON)


@get("/v1/tasks", summary="Tasks, oldest first, filtered by status, cursor-paged", tags=["tasks"])
async def list_tasks(request: Request[None, None, State], principal: NamedDependency[Principal],
                     status: StatusFilter = None, page_size: PageSize = 50,
                     cursor: Cursor = None, consistent_with: Token = None) -> Page:
    return await _reads(request).tasks(status, page_size, cursor, _token(request, consistent_with))


@get("/v1/streams/{stream:str}/history", summary="The audit trail of a stream", tags=["history"])
async def get_history(request: Request[None, None, State], principal: NamedDependency[Principal], stream: Stream,
                      cursor: AfterVersion = 0,
                      page_size: PageSize = 100, consistent_with: Token = None) -> Page:
    stream_exists_check(stream)
    return await _reads(request).history(stream, cursor, page_size, _token(request, consistent_with))


ROUTES = [get_project, get_task, list_tasks, get_history]
