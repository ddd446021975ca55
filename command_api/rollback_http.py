"""``POST /v1/runs/{run_id}/rollback``: an agent run's compensating commands, planned (``dry_run``) or sent."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter

from blackboard.command_api import rollback
from blackboard.command_api.http_errors import require_read, require_write
from blackboard.command_api.service import CommandService
from blackboard.domain.decoding import json_body
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.auth import WRITES, Principal
from blackboard.schemas.errors import NotFound
from blackboard.schemas.runs import RollbackPlan, RollbackRequest

RunId = Annotated[str, PathParameter(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                                     description="the agent run id commands carried in agent.run_id")]

_ERRORS = {
    400: ResponseSpec(ErrorBody, description="malformed_json"),
    415: ResponseSpec(ErrorBody, description="unsupported_media_type"),
    403: ResponseSpec(ErrorBody, description="insufficient_scope: blackboard:write (a dry run: blackboard:read)"),
    404: ResponseSpec(ErrorBody, description="run_not_found"),
    422: ResponseSpec(ErrorBody, description="invalid_request"),
}


async def json_front(request: Request[Any, Any, Any]) -> None:
    """A ``before_request`` hook: a body, when there is one, is UTF-8 JSON within the limits every body has
    (``domain.decoding``), refused with a 4xx before the framework decodes it."""
    json_body(request.headers.get("content-type"), await request.body(), required=False)


@post("/v1/runs/{run_id:str}/rollback", status_code=200, tags=["runs"], responses=_ERRORS, before_request=json_front,
      summary="Take an agent run back with compensating commands (dry_run: only the plan)", opt={WRITES: True})
async def rollback_run(request: Request[RollbackRequest, None, State], principal: NamedDependency[Principal],
                       run_id: RunId, data: JSONBody[RollbackRequest | None] = None) -> RollbackPlan:
    """The plan: per stream the run touched, the commands that put its fields back, with each field's
    from → to; the conflicts (fields others changed after the run), skipped unless ``on_conflict`` is
    ``overwrite``; and what no command can take back. Without ``dry_run`` each command is sent, as the
    caller, correlated to the plan's ``rollback_id``, and answered with its status. With
    ``consistent_with`` (or the ``Blackboard-Consistency`` header) the plan waits until the audit trail
    has passed that position. Only the caller's tenant's streams are planned for: a run that touched none of them
    answers 404 ``run_not_found``, as a run that sent nothing.
    """
    asked = data or RollbackRequest()
    if asked.dry_run:
        require_read(principal, "planning a rollback")
    else:
        require_write(principal, None, "a rollback")
    runtime = request.app.state.runtime
    token = asked.consistent_with or request.headers.get("blackboard-consistency")
    if token and runtime.reads is not None:
        # The read side of this process knows how far the audit trail has read; a command-only process
        # has none, and plans from what is there (each command is guarded all the same).
        await runtime.reads.wait_consistent(token)
    made = await rollback.plan(runtime.pool, run_id, overwrite=asked.on_conflict == "overwrite",
                               dry_run=asked.dry_run, tenant=principal.tenant)
    if made is None:
        raise NotFound(f"no event was sent by agent run {run_id!r}", code="run_not_found")
    if asked.dry_run:
        return made
    service: CommandService = runtime.commands
    return await rollback.apply(service, made, actor=principal.name, tenant=principal.tenant)


ROUTES = [rollback_run]
