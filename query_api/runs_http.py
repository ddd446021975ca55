"""HTTP reads of agent runs: ``GET /v1/runs``, a run's summary, its changes and its effects.

Every route reads the caller's tenant's runs only (``query_api/runs.py``), and honours a consistency token like
the other reads, so a client that just sent a run's last command reads the run with it.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from blackboard.query_api import lists, runs
from blackboard.query_api.http import Cursor, PageSize, Token, consistent_reads
from blackboard.query_api.run_specs import RUNS
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.auth import Principal
from blackboard.schemas.runs import RunChanges, RunEffects, RunSummary
from blackboard.schemas.views import Page

RunId = Annotated[str, PathParameter(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                                     description="the agent run id commands carried in agent.run_id")]
Depth = Annotated[int, QueryParameter(ge=1, le=runs.MAX_DEPTH, description="levels of causation to follow")]

_ERRORS = {
    404: ResponseSpec(ErrorBody, description="run_not_found"),
    422: ResponseSpec(ErrorBody, description="invalid_sort, invalid_filter, invalid_cursor, unknown_field, "
                                             "invalid_request"),
}


@get("/v1/runs", summary="Agent runs: sorted, filtered, cursor-paged", tags=["runs"], responses=_ERRORS)
async def list_runs(
    request: Request[None, None, State], principal: NamedDependency[Principal],
    model: Annotated[str | None, QueryParameter(description="only runs of this model")] = None,
    run_principal: Annotated[str | None, QueryParameter(
        name="principal", description="only runs sent by this principal")] = None,
    prompt_hash: Annotated[str | None, QueryParameter(description="only runs with this prompt hash")] = None,
    since: Annotated[str | None, QueryParameter(description="runs active at or after this ISO 8601 time")] = None,
    until: Annotated[str | None, QueryParameter(description="runs active at or before this ISO 8601 time")] = None,
    sort: Annotated[str | None, QueryParameter(
        description="keys among id, first_at, last_at, events; '-' for descending; default '-last_at'")] = None,
    fields: Annotated[str | None, QueryParameter(description="only these fields, e.g. 'id,model,events'")] = None,
    page_size: PageSize = 50, cursor: Cursor = None, consistent_with: Token = None,
) -> Page:
    """Each run with its model, prompt hash, principal, first and last time, events and commands."""
    given = {"model": model, "principal": run_principal, "prompt_hash": prompt_hash, "since": since, "until": until}
    scope = (principal.tenant,)
    query = lists.parse_list_query(RUNS, sort=sort, filters={k: v for k, v in given.items() if v is not None},
                                   page_size=page_size, cursor=cursor, fields=fields, scope=scope)
    reads = await consistent_reads(request, consistent_with)
    rows, next_cursor = await lists.fetch_page(reads.pool, RUNS, query, scope, tenant=principal.tenant)
    items = [lists.select_fields({k: r[k] for k in RUNS.fields or ()}, query.fields) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@get("/v1/runs/{run_id:str}", summary="An agent run: what it did, where, and the money it moved", tags=["runs"],
     responses=_ERRORS)
async def get_run(request: Request[None, None, State], principal: NamedDependency[Principal], run_id: RunId,
                  consistent_with: Token = None) -> RunSummary:
    reads = await consistent_reads(request, consistent_with)
    return await runs.run_summary(reads.pool, run_id, tenant=principal.tenant)


@get("/v1/runs/{run_id:str}/changes", summary="Every event of an agent run in log order, with its field diffs",
     tags=["runs"], responses=_ERRORS)
async def get_run_changes(request: Request[None, None, State], principal: NamedDependency[Principal], run_id: RunId,
                          page_size: PageSize = 100, cursor: Cursor = None,
                          consistent_with: Token = None) -> RunChanges:
    reads = await consistent_reads(request, consistent_with)
    return await runs.run_changes(reads.pool, run_id, cursor=cursor, limit=page_size, tenant=principal.tenant)


@get("/v1/runs/{run_id:str}/effects", summary="Events that followed from an agent run's events, with their chains",
     tags=["runs"], responses=_ERRORS)
async def get_run_effects(request: Request[None, None, State], principal: NamedDependency[Principal], run_id: RunId,
                          max_depth: Depth = runs.MAX_DEPTH, consistent_with: Token = None) -> RunEffects:
    reads = await consistent_reads(request, consistent_with)
    return await runs.run_effects(reads.pool, run_id, max_depth=max_depth, tenant=principal.tenant)


ROUTES = [list_runs, get_run, get_run_changes, get_run_effects]
