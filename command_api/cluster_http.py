"""HTTP commands of the agent cluster that are more than one command: claim the next task, create a task graph,
and the heartbeat shortcut a worker sends without inventing command ids."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from blackboard.command_api.claims import ClaimService
from blackboard.command_api.http_errors import require_write
from blackboard.command_api.service import CommandService, submit_json
from blackboard.domain.decoding import BadInput, convert, json_body
from blackboard.schemas.api import Accepted, FieldError, Rejected
from blackboard.schemas.auth import WRITES, Principal
from blackboard.schemas.errors import ApiError, InvalidRequest
from blackboard.schemas.node import Load, ReportedStatus
from blackboard.schemas.project import TtlSeconds
from blackboard.schemas.task import CreateTask
from blackboard.schemas.tenancy import scope_stream
from blackboard.schemas.types import Identifier, Skill

JSON = "application/json"
NodeId = Annotated[str, PathParameter(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
#: Most tasks one graph creates.
MAX_GRAPH = 1000


class ClaimRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Skills default to the node's registered ones; the lease to the task's own."""

    skills: Annotated[list[Skill], msgspec.Meta(max_length=256)] | None = None
    lease_seconds: TtlSeconds | None = None


class ClaimAnswer(msgspec.Struct, frozen=True):
    """The claimed task: its fencing token goes with every later command about it (start, progress, complete, fail)."""

    task_id: str
    token: int
    expires_at: str
    name: str
    type: str
    priority: int
    payload: dict[str, Any]
    required_skills: list[str]
    attempts: int
    position: str


class HeartbeatAnswer(msgspec.Struct, frozen=True):
    """A heartbeat's answer: whether it was written to the log, and the position to read it at."""

    recorded: bool
    position: str


class GraphTaskOutcome(msgspec.Struct, frozen=True, omit_defaults=True):
    """One task of a graph: accepted (its version and position) or rejected (its code and why)."""

    id: str
    outcome: str
    version: int | None = None
    position: str | None = None
    code: str | None = None
    message: str | None = None


class GraphAnswer(msgspec.Struct, frozen=True):
    correlation_id: str
    tasks: list[GraphTaskOutcome]


class HeartbeatRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: ReportedStatus = "idle"
    load: Load = 0


class GraphTask(CreateTask, frozen=True, forbid_unknown_fields=True):
    """A task of a graph: ``task.create``'s fields plus its ``id``; ``depends_on`` may name tasks of the graph."""

    id: Identifier = ""


class TaskGraph(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tasks: Annotated[list[GraphTask], msgspec.Meta(min_length=1, max_length=MAX_GRAPH)]
    correlation_id: Identifier | None = None




def _decode(request: Request[Any, Any, Any], body: bytes, type_: type[Any], *, required: bool = False) -> Any:
    """The body as a ``type_`` through the front every body passes (an empty one is ``{}`` unless ``required``)."""
    value = json_body(request.headers.get("content-type"), body, required=required)
    try:
        return convert({} if value is None else value, type_, "$")
    except BadInput as exc:
        raise InvalidRequest("the body is not a valid request", errors=exc.errors) from None


@post("/v1/nodes/{node_id:str}/claim", status_code=200, summary="Claim the next task this node can do",
      tags=["nodes"], opt={WRITES: True})
async def claim_next(
    request: Request[None, None, State], principal: NamedDependency[Principal], node_id: NodeId,
    consistent_with: Annotated[str | None, QueryParameter(
        description="a position token: look for tasks once the read model has reached it (e.g. the position "
                    "of a task.create just answered)", max_length=4096)] = None,
) -> Response[bytes]:
    """The pending task of highest priority (oldest first within one) whose skills the node offers, claimed
    with a lease and a fencing token; 204 when there is none. 404 ``node_not_found``, 409 ``node_offline``.
    The node and its tasks are the caller's tenant's: no other tenant's task is ever given to it.

    Note: candidates come from the read model; a task created a moment ago may not be in it yet,
    unless ``consistent_with`` names the position of its creation."""
    require_write(principal, "task", "task.claim")
    body = _decode(request, await request.body(), ClaimRequest)
    reads = request.app.state.runtime.reads
    if consistent_with and reads is not None:
        await reads.wait_consistent(consistent_with)
    claims: ClaimService = request.app.state.runtime.claims
    claimed = await claims.claim(node_id, skills=body.skills, lease_seconds=body.lease_seconds, actor=principal.name,
                                  tenant=principal.tenant)
    if claimed is None:
        return Response(b"", status_code=204)
    event = claimed.outcome.events[-1].payload
    task = claimed.state
    answer = ClaimAnswer(claimed.task_id, event["token"], event["expires_at"], task.name, task.type, task.priority,
                         task.payload, task.required_skills, task.attempts, claimed.outcome.position)
    return Response(msgspec.json.encode(answer), media_type=JSON)


@post("/v1/nodes/{node_id:str}/heartbeat", status_code=200, summary="A node's heartbeat", tags=["nodes"],
      opt={WRITES: True})
async def heartbeat(request: Request[None, None, State], principal: NamedDependency[Principal],
                    node_id: NodeId) -> Response[bytes]:
    """``node.heartbeat`` with a fresh command id; ``recorded`` says whether it was written to the log
    (most are not: see the coalescing rule of ``node.heartbeat``)."""
    require_write(principal, "node", "node.heartbeat")
    body = _decode(request, await request.body(), HeartbeatRequest)
    service: CommandService = request.app.state.runtime.commands
    outcome = await submit_json(service, stream=f"node:{node_id}", type_="node.heartbeat",
                                payload=msgspec.to_builtins(body), command_id=f"hb-{uuid.uuid4().hex}",
                                actor=principal.name, tenant=principal.tenant)
    if isinstance(outcome, Rejected):
        return Response(msgspec.json.encode(outcome), status_code=409, media_type=JSON)
    return Response(msgspec.json.encode(HeartbeatAnswer(bool(outcome.events), outcome.position)), media_type=JSON)


@post("/v1/task-graphs", status_code=200, summary="Create tasks with dependencies among them", tags=["tasks"],
      opt={WRITES: True})
async def create_graph(request: Request[None, None, State], principal: NamedDependency[Principal]) -> Response[bytes]:
    """Every task of the graph, created dependencies first. A cycle is refused (422 ``dependency_cycle``, naming
    it) before anything is created, as is a dependency on a task that neither exists nor is in the graph
    (422 ``unknown_dependency``). Creating the same graph again changes nothing."""
    require_write(principal, "task", "task.create")
    graph: TaskGraph = _decode(request, await request.body(), TaskGraph, required=True)
    service: CommandService = request.app.state.runtime.commands
    # Dependencies outside the graph are the caller's tenant's tasks, as every id it names.
    order = topological_order(graph.tasks,
                              exists=lambda t: _may_exist(service, scope_stream(principal.tenant, f"task:{t}")))
    correlation = graph.correlation_id or uuid.uuid4().hex
    outcomes: list[GraphTaskOutcome] = []
    for level in order:
        for task in level:
            payload = {k: v for k, v in msgspec.to_builtins(task).items() if k != "id"}
            outcome = await submit_json(service, stream=f"task:{task.id}", type_="task.create", payload=payload,
                                        command_id=f"graph-{correlation}-{task.id}"[:128],
                                        actor=principal.name, tenant=principal.tenant,
                                        correlation_id=correlation)
            if isinstance(outcome, Rejected):
                outcomes.append(GraphTaskOutcome(task.id, "rejected", code=outcome.code, message=outcome.message))
            else:
                assert isinstance(outcome, Accepted)
                outcomes.append(GraphTaskOutcome(task.id, "accepted", version=outcome.version,
                                                 position=outcome.position))
    return Response(msgspec.json.encode(GraphAnswer(correlation, outcomes)), media_type=JSON)


def topological_order(tasks: list[GraphTask], exists: Any) -> list[list[GraphTask]]:
    """``tasks`` in levels, each depending only on earlier levels or existing tasks; raises for a cycle or an
    unknown dependency (with the JSON path of the offending entry)."""
    by_id: dict[str, GraphTask] = {}
    for i, task in enumerate(tasks):
        if not task.id:
            raise _invalid("invalid_request", f"$.tasks[{i}].id", "every task of a graph needs an id")
        if task.id in by_id:
            raise _invalid("invalid_request", f"$.tasks[{i}].id", f"task {task.id!r} is in the graph twice")
        by_id[task.id] = task
    for i, task in enumerate(tasks):
        for j, dep in enumerate(task.depends_on):
            if dep == task.id:
                raise _invalid("self_dependency", f"$.tasks[{i}].depends_on[{j}]", f"{dep!r} depends on itself")
            if dep not in by_id and not exists(dep):
                raise _invalid("unknown_dependency", f"$.tasks[{i}].depends_on[{j}]",
                               f"task {dep!r} neither exists nor is in the graph")
    levels: list[list[GraphTask]] = []
    done: set[str] = set()
    left = dict(by_id)
    while left:
        ready = [t for t in left.values() if all(d in done or d not in by_id for d in t.depends_on)]
        if not ready:
            cycle = _a_cycle(left)
            raise _invalid("dependency_cycle", "$.tasks", f"the dependencies form a cycle: {' → '.join(cycle)}",
                           details=cycle)
        levels.append(ready)
        for t in ready:
            done.add(t.id)
            del left[t.id]
    return levels


def _a_cycle(left: dict[str, GraphTask]) -> list[str]:
    """One cycle among ``left`` (every task of which waits for another of them)."""
    path: list[str] = []
    at = next(iter(left))
    while at not in path:
        path.append(at)
        at = next(d for d in left[at].depends_on if d in left)
    return [*path[path.index(at):], at]


def _invalid(code: str, path: str, message: str, details: list[str] | None = None) -> ApiError:
    error = InvalidRequest(message, code=code, errors=[FieldError(path, message)])
    if details:
        error.errors.append(FieldError("$.cycle", " → ".join(details)))
    return error


def unknown_dependencies(service: CommandService, payload: CreateTask) -> list[FieldError]:
    """The dependencies of a ``task.create`` that do not exist (a dependency must exist before its dependant,
    which is why no cycle can form: ``depends_on`` never changes).

    Note: ``payload`` is a submission's, its dependencies scoped to the sender's tenant (``owner.submission``): a
    task of another tenant is looked for in the sender's, where it does not exist, and the message names the stored
    id, which the answer shows as the sender named it."""
    return [FieldError(f"$.payload.depends_on[{i}]", f"task {dep!r} does not exist")
            for i, dep in enumerate(payload.depends_on) if not _may_exist(service, f"task:{dep}")]


def _may_exist(service: CommandService, stream: str) -> bool:
    """Whether ``stream`` exists, as far as this process can tell: a stream of a partition decided
    elsewhere (several deciders in a group) cannot be checked here, and is not refused."""
    return not service.owns(stream) or service.peek(stream) is not None


ROUTES = [claim_next, heartbeat, create_graph]
