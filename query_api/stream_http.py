"""HTTP routes of history, time travel and push, over any stream (and a project's shots and artifacts).

Every read honours a consistency token (query ``consistent_with`` or header
``Blackboard-Consistency``) like the other reads. States and changes are computed by folding the
stream's ``change_log`` rows with its decider (see ``query_api/history.py`` for the cost).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, PathParameter, QueryParameter
from litestar.response import ServerSentEvent

from blackboard.query_api import history as h
from blackboard.query_api.http import reads_of, token_of
from blackboard.query_api.push import resume_point, subscribe
from blackboard.query_api.reads import MAX_PAGE, ReadService, stream_exists_check
from blackboard.schemas.auth import Principal
from blackboard.schemas.changes import escape
from blackboard.schemas.errors import NotFound
from blackboard.schemas.tenancy import scope_id, scope_stream
from blackboard.schemas.views import HistoryEntry, Page, StreamState

EntityId = Annotated[str, PathParameter(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
Stream = Annotated[str, PathParameter(min_length=3, max_length=300, description="'<category>:<id>'")]
PageSize = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="items per page")]
AfterVersion = Annotated[int, QueryParameter(ge=0, le=2**53, description="the last version seen")]
Token = Annotated[str | None, QueryParameter(description="a command's position: wait until reads have passed it")]
Version = Annotated[int | None, QueryParameter(ge=1, le=2**53, description="the version to show")]
At = Annotated[datetime | None, QueryParameter(description="RFC 3339 time with offset: the state then")]
ResumeAfter = Annotated[int | None, QueryParameter(ge=0, le=2**53, description="send entries after this version")]
LastEventId = Annotated[str | None, HeaderParameter(name="last-event-id", description="the id of the last event seen")]

PROJECT = "project"


class SubEntityState(msgspec.Struct, frozen=True):
    """``GET /v1/projects/{id}/shots/{shot_id}/state``: the shot at its own ``version``, as it was
    after the project's ``project_version``."""

    project_id: str
    id: str
    version: int
    project_version: int
    occurred_at: datetime | None
    state: Any


async def _consistent(request: Request[None, None, State], token: str | None) -> ReadService:
    reads = reads_of(request)
    await reads.wait_consistent(token_of(request, token))
    return reads


# ── history ────────────────────────────────────────────────────────────────────────────


@get("/v1/streams/{stream:str}/history", summary="The audit trail of a stream, with what each event changed",
     tags=["history"])
async def get_history(request: Request[None, None, State], principal: NamedDependency[Principal], stream: Stream,
                      cursor: AfterVersion = 0, page_size: PageSize = 100, consistent_with: Token = None) -> Page:
    stream_exists_check(stream)
    return await reads_of(request).history(scope_stream(principal.tenant, stream), cursor, page_size,
                                           token_of(request, consistent_with))


def _page(entries: list[HistoryEntry], page_size: int) -> Page:
    more = len(entries) > page_size
    items = entries[:page_size]
    return Page(items=items, next_cursor=str(items[-1].version) if more else None)


async def _sub_history(request: Request[None, None, State], principal: Principal, project_id: str, collection: str,
                       ident: str, cursor: int, page_size: int, token: str | None) -> Page:
    reads = await _consistent(request, token)
    stream = f"{PROJECT}:{scope_id(principal.tenant, project_id)}"
    rows = await h.load_rows(reads.pool, stream)
    if not rows:
        raise NotFound(f"stream {stream!r} has no events", code="stream_not_found")
    picked = h.entries_under(h.entries_with_changes(PROJECT, rows), f"/{collection}/{escape(ident)}")
    if not picked:
        kind = collection.removesuffix("s")
        raise NotFound(f"{kind} {ident!r} of project {project_id!r} never existed", code=f"{kind}_not_found")
    return _page([e for e in picked if e.version > cursor][: page_size + 1], page_size)


@get("/v1/projects/{project_id:str}/shots/{shot_id:str}/history", tags=["history"],
     summary="The project's entries that changed this shot, with only those changes")
async def get_shot_history(request: Request[None, None, State], principal: NamedDependency[Principal],
                           project_id: EntityId, shot_id: EntityId, cursor: AfterVersion = 0,
                           page_size: PageSize = 100, consistent_with: Token = None) -> Page:
    return await _sub_history(request, principal, project_id, "shots", shot_id, cursor, page_size, consistent_with)


@get("/v1/projects/{project_id:str}/artifacts/{artifact_id:str}/history", tags=["history"],
     summary="The project's entries that changed this artifact, with only those changes")
async def get_artifact_history(request: Request[None, None, State], principal: NamedDependency[Principal],
                               project_id: EntityId, artifact_id: EntityId, cursor: AfterVersion = 0,
                               page_size: PageSize = 100, consistent_with: Token = None) -> Page:
    return await _sub_history(request, principal, project_id, "artifacts", artifact_id, cursor, page_size,
                              consistent_with)


# ── time travel ────────────────────────────────────────────────────────────────────────


@get("/v1/streams/{stream:str}/state", tags=["history"],
     summary="A stream's state at a version or a time (the latest without either)")
async def get_stream_state(request: Request[None, None, State], principal: NamedDependency[Principal],
                           stream: Stream, version: Version = None, at: At = None,
                           consistent_with: Token = None) -> StreamState:
    stream_exists_check(stream)
    return await reads_of(request).state_at(scope_stream(principal.tenant, stream), version, at,
                                            token_of(request, consistent_with))


@get("/v1/projects/{project_id:str}/shots/{shot_id:str}/state", tags=["history"],
     summary="A shot at its own version or at a time (the latest without either)")
async def get_shot_state(request: Request[None, None, State], principal: NamedDependency[Principal],
                         project_id: EntityId, shot_id: EntityId, version: Version = None, at: At = None,
                         consistent_with: Token = None) -> SubEntityState:
    h.one_bound(version, at)
    reads = await _consistent(request, consistent_with)
    stream = f"{PROJECT}:{scope_id(principal.tenant, project_id)}"
    rows = await h.load_rows(reads.pool, stream, at=at)
    if not rows:
        await h.missing_version(reads.pool, stream, None, at)
    if version is not None:
        found = h.sub_entity_version(PROJECT, rows, "shots", shot_id, version)
        if found is None:
            _missing_shot(h.fold_at(PROJECT, rows), project_id, shot_id, version)
        assert found is not None
        reached, shot = found
    else:
        reached = h.fold_at(PROJECT, rows)
        shot = _missing_shot(reached, project_id, shot_id, None, at)
    return SubEntityState(project_id, shot_id, int(shot.get("version", 0)), reached.version, reached.occurred_at,
                          shot)


def _missing_shot(reached: h.StateAt, project_id: str, shot_id: str, version: int | None,
                  at: datetime | None = None) -> dict[str, Any]:
    """The shot in ``reached``; else 404 ``shot_not_found``, or ``version_not_found`` when it exists."""
    shot = h.sub_entity(h.builtins(reached.state), "shots", shot_id)
    when = f" at {at.isoformat()}" if at is not None else ""
    if not isinstance(shot, dict):
        raise NotFound(f"project {project_id!r} has no shot {shot_id!r}{when}", code="shot_not_found")
    if version is not None:
        raise NotFound(f"shot {shot_id!r} is at version {shot.get('version')}; version {version} does not exist",
                       code="version_not_found")
    return shot


# ── push ───────────────────────────────────────────────────────────────────────────────


@get("/v1/streams/{stream:str}/changes", tags=["push"],
     summary="Server-Sent Events: each new history entry of a stream (id = its version); resumable")
async def stream_changes(request: Request[None, None, State], principal: NamedDependency[Principal],
                         stream: Stream, after: ResumeAfter = None, last_event_id: LastEventId = None,
                         consistent_with: Token = None) -> ServerSentEvent:
    stream_exists_check(stream)
    start = resume_point(last_event_id, after)
    await _consistent(request, consistent_with)
    return await subscribe(request.app, scope_stream(principal.tenant, stream), start, tenant=principal.tenant)


@get("/v1/projects/{project_id:str}/changes", tags=["push"],
     summary="Server-Sent Events: each new history entry of a project (id = its version); resumable")
async def project_changes(request: Request[None, None, State], principal: NamedDependency[Principal],
                          project_id: EntityId, after: ResumeAfter = None, last_event_id: LastEventId = None,
                          consistent_with: Token = None) -> ServerSentEvent:
    start = resume_point(last_event_id, after)
    await _consistent(request, consistent_with)
    return await subscribe(request.app, f"{PROJECT}:{scope_id(principal.tenant, project_id)}", start,
                           tenant=principal.tenant)


ROUTES = [get_history, get_shot_history, get_artifact_history, get_stream_state, get_shot_state, stream_changes,
          project_changes]
