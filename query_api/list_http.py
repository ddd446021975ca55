"""HTTP lists of a project's shots, and a batch get of shots by id (the list machinery is ``lists.py``).

Both read PostgreSQL (the ``shots`` read model), not the cached project document: a page or a
batch is a small slice of a project whose document carries every shot.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter

from blackboard.projector.documents import shot_document
from blackboard.query_api import lists
from blackboard.query_api.bodies import json_front
from blackboard.query_api.http import Cursor, EntityId, PageSize, Token, consistent_reads, reads_of, token_of
from blackboard.query_api.reads import require_project
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.auth import Principal
from blackboard.schemas.tenancy import scope_id
from blackboard.schemas.views import Page

MAX_BATCH = 500
ShotId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00]+$")]

_ERRORS = {
    404: ResponseSpec(ErrorBody, description="project_not_found"),
    422: ResponseSpec(ErrorBody, description="invalid_sort, invalid_filter, invalid_cursor, unknown_field, "
                                             "too_many_ids, duplicate_ids, invalid_request"),
}


class BatchGet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST …/shots/batch-get`` body: up to 500 distinct shot ids, and optionally the fields to return."""

    ids: list[ShotId]
    fields: list[str] | None = None


class BatchGetResult(msgspec.Struct, frozen=True):
    """The shots found, in the order asked, and the ids of those that do not exist."""

    items: list[dict[str, Any]]
    missing: list[str]


@get("/v1/projects/{project_id:str}/shots", summary="A project's shots: sorted, filtered, cursor-paged",
     tags=["projects"], responses=_ERRORS)
async def list_shots(
    request: Request[None, None, State], principal: NamedDependency[Principal], project_id: EntityId,
    status: Annotated[str | None, QueryParameter(description="only shots whose field 'status' is this")] = None,
    scene: Annotated[str | None, QueryParameter(description="only shots whose field 'scene' is this")] = None,
    sort: Annotated[str | None, QueryParameter(
        description="keys among id, version, updated_at and field.<name> (text order; a missing field sorts "
                    "as ''); '-' for descending; default 'id'")] = None,
    fields: Annotated[str | None, QueryParameter(description="only these fields, e.g. 'id,status,spec.lens'")] = None,
    page_size: PageSize = 50, cursor: Cursor = None, consistent_with: Token = None,
) -> Page:
    """Filters are ``status``, ``scene`` and ``field.<name>=<value>`` (equality on any top-level field)."""
    filters = lists.filter_params(lists.SHOTS, dict(request.query_params.items()))
    query = lists.parse_list_query(lists.SHOTS, sort=sort, filters=filters, page_size=page_size, cursor=cursor,
                                   fields=fields, scope=(project_id,))
    reads = await consistent_reads(request, consistent_with)
    stored = scope_id(principal.tenant, project_id)
    async with reads.pool.acquire() as conn:
        rows, next_cursor = await lists.fetch_page(conn, lists.SHOTS, query, (stored,), tenant=principal.tenant)
        if not rows:
            await require_project(conn, stored)
    items = [lists.select_fields(shot_document(r), query.fields, strict=False) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@post("/v1/projects/{project_id:str}/shots/batch-get", status_code=200, summary="Shots by id, in the order asked",
      tags=["projects"], responses=_ERRORS, before_request=json_front)
async def batch_get_shots(request: Request[BatchGet, None, State], principal: NamedDependency[Principal],
                          project_id: EntityId, data: JSONBody[BatchGet],
                          consistent_with: Token = None) -> BatchGetResult:
    """One query for up to 500 shots; ids that do not exist are listed in ``missing``, not refused."""
    check_ids(data.ids)
    wanted = lists.parse_fields(lists.SHOTS, data.fields)
    shots, missing = await reads_of(request).shots_by_id(scope_id(principal.tenant, project_id), data.ids,
                                                         token_of(request, consistent_with))
    return BatchGetResult(items=[lists.select_fields(shot, wanted, strict=False) for shot in shots], missing=missing)


def check_ids(ids: list[str]) -> None:
    """Refuse more than ``MAX_BATCH`` ids (``too_many_ids``) or an id asked twice (``duplicate_ids``)."""
    if len(ids) > MAX_BATCH:
        raise lists.refuse("too_many_ids", "ids", f"at most {MAX_BATCH} ids per batch, not {len(ids)}")
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise lists.refuse("duplicate_ids", "ids", f"ids repeat {repeated[:10]}; ask for each once")


ROUTES = [list_shots, batch_get_shots]
