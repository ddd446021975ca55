"""HTTP reads of projects (the list), a project's parts (budget, global spec, DNA bank, artifacts), and leases.

Each answers from PostgreSQL after the consistency token (``consistent_with`` or the
``Blackboard-Consistency`` header) has been reached, like every other read.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from blackboard.projector.documents import artifact_view, project_summary
from blackboard.query_api import lists
from blackboard.query_api.http import Cursor, EntityId, PageSize, Token, consistent_reads, reads_of, token_of
from blackboard.query_api.reads import require_project
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.auth import Principal
from blackboard.schemas.errors import NotFound
from blackboard.schemas.tenancy import scope_id
from blackboard.schemas.views import BudgetView, DnaView, LeaseView, Page, SpecView

JSON = "application/json"
LeaseName = Annotated[str, PathParameter(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
_MISSING = {404: ResponseSpec(ErrorBody, description="project_not_found")}


async def _part(request: Request[None, None, State], principal: Principal, project_id: str, part: str,
                token: str | None) -> Response[bytes]:
    doc = await reads_of(request).project_part(scope_id(principal.tenant, project_id), part, token_of(request, token))
    return Response(doc, media_type=JSON)


@get("/v1/projects/{project_id:str}/budget", summary="A project's budget and its reservations", tags=["projects"],
     responses={200: ResponseSpec(BudgetView), **_MISSING})
async def get_budget(request: Request[None, None, State], principal: NamedDependency[Principal],
                     project_id: EntityId, consistent_with: Token = None) -> Response[bytes]:
    """Total, spent, reserved, remaining (= total - spent - reserved) and the reservations holding money."""
    return await _part(request, principal, project_id, "budget", consistent_with)


@get("/v1/projects/{project_id:str}/spec", summary="A project's global spec and its version", tags=["projects"],
     responses={200: ResponseSpec(SpecView), **_MISSING})
async def get_spec(request: Request[None, None, State], principal: NamedDependency[Principal],
                   project_id: EntityId, consistent_with: Token = None) -> Response[bytes]:
    """The global spec; its ``version`` is what ``project.patch_spec`` takes as ``expected_version``."""
    return await _part(request, principal, project_id, "spec", consistent_with)


@get("/v1/projects/{project_id:str}/dna", summary="A project's DNA bank", tags=["projects"],
     responses={200: ResponseSpec(DnaView), **_MISSING})
async def get_dna(request: Request[None, None, State], principal: NamedDependency[Principal],
                  project_id: EntityId, consistent_with: Token = None) -> Response[bytes]:
    """Every entry by key, with its own version (what ``project.put_dna`` takes as ``expected_version``)."""
    return await _part(request, principal, project_id, "dna", consistent_with)


@get("/v1/leases/{name:str}", summary="A lease: who holds it, until when, its fencing token", tags=["leases"],
     responses={200: ResponseSpec(LeaseView), 404: ResponseSpec(ErrorBody, description="lease_not_found")})
async def get_lease(request: Request[None, None, State], principal: NamedDependency[Principal], name: LeaseName,
                    consistent_with: Token = None) -> Response[bytes]:
    """``held`` is false once ``expires_at`` has passed, even before anyone acquires the lease again."""
    doc = await reads_of(request).lease(scope_id(principal.tenant, name), token_of(request, consistent_with))
    return Response(doc, media_type=JSON)


@get("/v1/projects/{project_id:str}/shots/{shot_id:str}", summary="One shot: its fields, id and version",
     tags=["projects"], responses={404: ResponseSpec(ErrorBody, description="project_not_found, shot_not_found")})
async def get_shot(request: Request[None, None, State], principal: NamedDependency[Principal], project_id: EntityId,
                   shot_id: EntityId, consistent_with: Token = None) -> dict[str, Any]:
    """The shot's ``version`` is what ``project.update_shot`` takes as ``expected_version``."""
    shots, _ = await reads_of(request).shots_by_id(scope_id(principal.tenant, project_id), [shot_id],
                                                   token_of(request, consistent_with))
    if not shots:
        raise NotFound(f"project {project_id!r} has no shot {shot_id!r}", code="shot_not_found")
    return shots[0]


_LIST_ERRORS = {422: ResponseSpec(ErrorBody, description="invalid_sort, invalid_filter, invalid_cursor, unknown_field")}


@get("/v1/projects", summary="Projects: filtered, sorted, cursor-paged", tags=["projects"], responses=_LIST_ERRORS)
async def list_projects(
    request: Request[None, None, State], principal: NamedDependency[Principal],
    sort: Annotated[str | None, QueryParameter(
        description="keys among id, title, status, created_at, updated_at; '-' for descending; default 'id'")] = None,
    fields: Annotated[str | None, QueryParameter(description="only these fields, e.g. 'id,status,budget.remaining'")
                      ] = None,
    page_size: PageSize = 50, cursor: Cursor = None, consistent_with: Token = None,
) -> Page:
    """Filters: ``status``, ``title``, ``currency``, ``created_after``, ``created_before``, ``updated_after``.
    Items are project summaries (no shots, no DNA bank): read one project for those."""
    filters = lists.filter_params(lists.PROJECTS, dict(request.query_params.items()))
    query = lists.parse_list_query(lists.PROJECTS, sort=sort, filters=filters, page_size=page_size, cursor=cursor,
                                   fields=fields)
    reads = await consistent_reads(request, consistent_with)
    rows, next_cursor = await lists.fetch_page(reads.pool, lists.PROJECTS, query, tenant=principal.tenant)
    items = [lists.select_fields(msgspec.to_builtins(project_summary(r)), query.fields) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@get("/v1/projects/{project_id:str}/artifacts", summary="A project's artifacts: filtered, sorted, cursor-paged",
     tags=["projects"], responses={**_LIST_ERRORS, **_MISSING})
async def list_artifacts(
    request: Request[None, None, State], principal: NamedDependency[Principal], project_id: EntityId,
    sort: Annotated[str | None, QueryParameter(
        description="keys among id, kind, created_at, version; '-' for descending; default 'created_at'")] = None,
    fields: Annotated[str | None, QueryParameter(description="only these fields, e.g. 'artifact_id,uri,cost'")
                      ] = None,
    page_size: PageSize = 50, cursor: Cursor = None, consistent_with: Token = None,
) -> Page:
    """Filters: ``kind``, ``shot_id``, ``task_id``, ``created_by``, ``created_after``, ``created_before``."""
    filters = lists.filter_params(lists.ARTIFACTS, dict(request.query_params.items()))
    if "task_id" in filters:
        # A task is named as the caller's tenant names it; the rows hold its stored id.
        filters["task_id"] = scope_id(principal.tenant, filters["task_id"])
    query = lists.parse_list_query(lists.ARTIFACTS, sort=sort, filters=filters, page_size=page_size, cursor=cursor,
                                   fields=fields, scope=(project_id,))
    reads = await consistent_reads(request, consistent_with)
    stored = scope_id(principal.tenant, project_id)
    async with reads.pool.acquire() as conn:
        rows, next_cursor = await lists.fetch_page(conn, lists.ARTIFACTS, query, (stored,), tenant=principal.tenant)
        if not rows:
            await require_project(conn, stored)
    items = [lists.select_fields(msgspec.to_builtins(artifact_view(r)), query.fields) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


ROUTES = [get_budget, get_spec, get_dna, get_shot, get_lease, list_projects, list_artifacts]
