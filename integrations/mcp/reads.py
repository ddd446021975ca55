"""The read tools (and the rollback of a run): each one route of the HTTP API, its arguments a Struct.

A tool's input schema is its Struct's JSON Schema; its arguments are checked against the Struct before
the request (a wrong one is a tool error naming the field), then sent as the route's path and query (or,
for the rollback, its body). Lists answer one page: pass its ``next_cursor`` back as ``cursor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec

from blackboard.integrations.mcp.backend import Answer, Backend
from blackboard.integrations.mcp.tools import Run, ToolDef, object_schema
from blackboard.schemas.api import AgentText
from blackboard.schemas.command_schema import STREAM_ID
from blackboard.schemas.types import Identifier

PageSize = Annotated[int, msgspec.Meta(ge=1, le=500, description="items per page")]
Cursor = Annotated[str, msgspec.Meta(max_length=2000, description="next_cursor of the previous page")] | None
Stream = Annotated[str, msgspec.Meta(pattern=f"^[a-z]+:{STREAM_ID}$",
                                     description="'<category>:<id>', e.g. 'project:p-1', 'task:t-7'")]
Short = Annotated[str, msgspec.Meta(max_length=200)]
Text = Short | None


class Args(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the tools' arguments: an unknown argument is refused, not ignored."""


class ProjectArgs(Args, frozen=True, forbid_unknown_fields=True):
    project_id: Identifier


class ShotArgs(Args, frozen=True, forbid_unknown_fields=True):
    project_id: Identifier
    shot_id: Identifier


class ShotListArgs(Args, frozen=True, forbid_unknown_fields=True):
    """Filters: ``status`` and ``scene`` (equality on those fields)."""

    project_id: Identifier
    status: Text = None
    scene: Text = None
    sort: Annotated[Short, msgspec.Meta(
        description="id, version, updated_at or field.<name>; '-' descending; default id")] | None = None
    fields: Annotated[Short, msgspec.Meta(description="only these fields, e.g. 'id,status,spec.lens'")] | None = None
    page_size: PageSize = 50
    cursor: Cursor = None


class TaskArgs(Args, frozen=True, forbid_unknown_fields=True):
    task_id: Identifier


class TaskListArgs(Args, frozen=True, forbid_unknown_fields=True):
    status: Text = None
    name: Text = None
    type: Text = None
    user: Text = None
    parent: Text = None
    node: Text = None
    priority_min: int | None = None
    priority_max: int | None = None
    sort: Annotated[Short, msgspec.Meta(description="id, created_at, updated_at, priority, name or status; '-' "
                                                   "descending; default created_at")] | None = None
    fields: Annotated[Short, msgspec.Meta(description="only these fields, e.g. 'id,status,payload.a'")] | None = None
    page_size: PageSize = 50
    cursor: Cursor = None


class HistoryArgs(Args, frozen=True, forbid_unknown_fields=True):
    stream: Stream
    after: Annotated[int, msgspec.Meta(ge=0, description="the last version already seen (0: from the start)")] = 0
    page_size: PageSize = 100


class StateArgs(Args, frozen=True, forbid_unknown_fields=True):
    """Neither ``version`` nor ``at``: the latest state."""

    stream: Stream
    version: Annotated[int, msgspec.Meta(ge=1, description="the state after this version")] | None = None
    at: Annotated[datetime, msgspec.Meta(description="the state at this RFC 3339 time (with offset)")] | None = None


class DocumentArgs(Args, frozen=True, forbid_unknown_fields=True):
    collection: Identifier
    doc_id: Identifier
    include_deleted: bool = False


class DocumentListArgs(Args, frozen=True, forbid_unknown_fields=True):
    collection: Identifier
    where: Annotated[dict[str, Any], msgspec.Meta(description="a JSON object the body must contain")] | None = None
    sort: Literal["created_at", "-created_at", "updated_at", "-updated_at"] | None = None
    limit: PageSize = 50
    cursor: Cursor = None


class LeaseArgs(Args, frozen=True, forbid_unknown_fields=True):
    name: Identifier


class CommandArgs(Args, frozen=True, forbid_unknown_fields=True):
    command_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class RunListArgs(Args, frozen=True, forbid_unknown_fields=True):
    model: Text = None
    principal: Text = None
    prompt_hash: Text = None
    since: Annotated[Short, msgspec.Meta(description="runs active at or after this ISO 8601 time")] | None = None
    until: Annotated[Short, msgspec.Meta(description="runs active at or before this ISO 8601 time")] | None = None
    page_size: PageSize = 50
    cursor: Cursor = None


class RunArgs(Args, frozen=True, forbid_unknown_fields=True):
    run_id: AgentText


class RunChangesArgs(Args, frozen=True, forbid_unknown_fields=True):
    run_id: AgentText
    page_size: PageSize = 100
    cursor: Cursor = None


class RollbackArgs(Args, frozen=True, forbid_unknown_fields=True):
    run_id: AgentText
    dry_run: Annotated[bool, msgspec.Meta(
        description="true (the default here): answer the plan and send nothing; false: apply it")] = True
    on_conflict: Annotated[Literal["skip", "overwrite"], msgspec.Meta(
        description="a field someone else changed after the run: skip it (default) or overwrite it")] = "skip"


@dataclass(frozen=True)
class Route:
    """A tool's route: ``path`` formatted with the path arguments (each escaped), the others as the query
    (renamed by ``rename``), or as the JSON body with ``method`` POST."""

    name: str
    description: str
    args: type[Args]
    path: str
    method: str = "GET"
    rename: tuple[tuple[str, str], ...] = ()


READS = [
    Route("get_project", "A project: title, status, currency, budget (total, spent, reserved, remaining), global "
          "spec, DNA bank and every shot.", ProjectArgs, "/v1/projects/{project_id}"),
    Route("get_budget", "A project's budget and the reservations holding money.", ProjectArgs,
          "/v1/projects/{project_id}/budget"),
    Route("get_shot", "One shot: its fields, id and version (the expected_version of project.update_shot).",
          ShotArgs, "/v1/projects/{project_id}/shots/{shot_id}"),
    Route("list_shots", "A project's shots, one page, filtered and sorted.", ShotListArgs,
          "/v1/projects/{project_id}/shots"),
    Route("get_task", "A task: status, payload, attempts, the node holding it and its fencing token.", TaskArgs,
          "/v1/tasks/{task_id}"),
    Route("list_tasks", "Tasks, one page, filtered and sorted.", TaskListArgs, "/v1/tasks"),
    Route("get_history", "A stream's audit trail, oldest first: each event with who sent it, when, its agent run "
          "and the fields it changed (from → to).", HistoryArgs, "/v1/streams/{stream}/history",
          rename=(("after", "cursor"),)),
    Route("get_state", "A stream's state as of a version or a time (time travel), or the latest.", StateArgs,
          "/v1/streams/{stream}/state"),
    Route("get_document", "One document of a collection (reviews, corrections, evaluations…).", DocumentArgs,
          "/v1/collections/{collection}/documents/{doc_id}"),
    Route("list_documents", "A collection's documents, one page; where= keeps those whose body contains it.",
          DocumentListArgs, "/v1/collections/{collection}/documents"),
    Route("get_lease", "A lease: whether it is held, by whom, until when, its fencing token.", LeaseArgs,
          "/v1/leases/{name}"),
    Route("get_command_outcome", "What became of a command, by its command_id (accepted or rejected).",
          CommandArgs, "/v1/commands/{command_id}"),
    Route("list_runs", "Agent runs, the last active first: model, prompt hash, principal, times, counts.",
          RunListArgs, "/v1/runs"),
    Route("get_run", "One agent run: counts by command type and outcome, the streams it touched, the money it "
          "spent or reserved.", RunArgs, "/v1/runs/{run_id}"),
    Route("get_run_changes", "Every event an agent run caused, in log order, with its field diffs (one page).",
          RunChangesArgs, "/v1/runs/{run_id}/changes"),
    Route("get_run_effects", "Events that followed from an agent run's events (alerts, saga steps, released "
          "dependencies), each with the causation chain that led to it.", RunArgs, "/v1/runs/{run_id}/effects"),
]

ROLLBACK = Route("rollback_run", "Take an agent run back with compensating commands (never deletion). dry_run "
                 "(the default) answers the plan: per stream the commands, the fields they would change and the "
                 "conflicts (later changes by others, skipped unless on_conflict is 'overwrite'); dry_run false "
                 "applies it, with deterministic command ids, so a repeated rollback does nothing twice.",
                 RollbackArgs, "/v1/runs/{run_id}/rollback", method="POST")


class BadArguments(ValueError):
    """A tool's arguments do not fit its Struct: the message names the field."""


def _query_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return msgspec.json.encode(value).decode()
    return value


def _runner(route: Route) -> Run:
    placeholders = {name.strip("{}") for name in route.path.split("/") if name.startswith("{")}
    renamed = dict(route.rename)

    async def run(backend: Backend, arguments: dict[str, Any]) -> Answer:
        try:
            args = msgspec.convert(arguments, route.args)
        except msgspec.ValidationError as exc:
            raise BadArguments(str(exc)) from None
        given = {k: v for k, v in msgspec.structs.asdict(args).items() if v is not None}
        path = route.path.format(**{k: quote(str(given[k]), safe=":") for k in placeholders})
        rest = {renamed.get(k, k): _query_value(v) for k, v in given.items() if k not in placeholders}
        if route.method == "POST":
            answer = await backend.request("POST", path, body=rest)
            backend.note_positions(answer.body)
            return answer
        return await backend.request("GET", path, params=rest)

    return run


def _tool(route: Route, *, read_only: bool = True) -> ToolDef:
    (ref,), defs = object_schema([route.args])
    schema = defs.pop(ref["$ref"].rsplit("/", 1)[1])
    return ToolDef(name=route.name, description=route.description,
                   input_schema=schema | ({"$defs": defs} if defs else {}), run=_runner(route),
                   read_only=read_only, destructive=not read_only)


def read_tools() -> list[ToolDef]:
    """The reads, then the rollback of a run."""
    return [*(_tool(route) for route in READS), _tool(ROLLBACK, read_only=False)]
