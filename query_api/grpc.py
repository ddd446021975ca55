"""gRPC reads: the HTTP query API's documents as protobuf messages, served by the same ``ReadService``.

The service and its messages come from the committed ``.proto`` (generated from the Structs by
``blackboard.schemas.protogen``), compiled when the server starts: no generated ``*_pb2.py`` is kept
in the repository, so nothing but the ``.proto`` can drift, and a test pins that to the Structs.

Note: the file is compiled with grpc-tools' protoc into a descriptor set rather than through
``grpc.protos_and_services``: that helper imports the file as the module ``blackboard.query.v1.query_pb2``,
which collides with our own ``blackboard`` package and needs the proto folder on ``sys.path``.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
import msgspec
import structlog
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from blackboard.projector.documents import artifact_view
from blackboard.query_api import lists, runs
from blackboard.query_api.list_http import check_ids
from blackboard.query_api.reads import ReadService, stream_exists_check
from blackboard.query_api.tenant_reads import reading_as
from blackboard.schemas.api import FieldError
from blackboard.schemas.auth import DEFAULT_TENANT, Principal, presented_key
from blackboard.schemas.errors import RETRY_AFTER_SECONDS, ApiError, InvalidRequest, ServiceUnavailable, retryable
from blackboard.schemas.protogen import (
    PROTO_PATH,
    QUERY_SERVICE,
    ArtifactPage,
    BatchGetShotsRequest,
    GetBudgetRequest,
    GetHistoryRequest,
    GetProjectRequest,
    GetRunChangesRequest,
    GetRunEffectsRequest,
    GetRunRequest,
    GetStateAtRequest,
    GetTaskRequest,
    ListArtifactsRequest,
    ListTasksRequest,
    Rpc,
    Service,
    ShotBatch,
)
from blackboard.schemas.tenancy import scope_id, scope_stream, unscope_json, unscope_text

log = structlog.get_logger(__name__)

#: The trailing-metadata key that carries an error's machine-readable code (as the HTTP body's ``code``).
ERROR_CODE_KEY = "blackboard-error-code"
#: The trailing-metadata key that carries the whole problem document (JSON) the HTTP route would answer.
PROBLEM_KEY = "blackboard-problem-bin"
#: Longest wait, on stop, for running calls to finish before they are cancelled.
GRACE_SECONDS = 3.0

_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
           403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
           409: grpc.StatusCode.FAILED_PRECONDITION, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
           415: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
           429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}

ReadsGetter = Callable[[], ReadService | None]
#: The principal of a call that presents a credential (``None``: none) from a peer: raises the ``ApiError`` it is
#: refused with (401, 403 without the read scope, 429 over a rate limit). The wiring gives it.
Authenticate = Callable[[str | None, str], Awaitable[Principal]]
#: An RPC's work: the typed request and the caller's tenant → the JSON document the HTTP API would answer (bytes or
#: a Struct), in stored ids (the caller's are given back by ``call``, as over HTTP).
Handler = Callable[[ReadService, Any, str], Awaitable[bytes | msgspec.Struct]]


# ── Handlers: one per RPC of ``QUERY_SERVICE``, keyed by its name ─────────────────────────────────


async def _get_project(reads: ReadService, req: GetProjectRequest, tenant: str) -> bytes:
    return await reads.project(scope_id(tenant, req.project_id), req.consistent_with)


async def _get_task(reads: ReadService, req: GetTaskRequest, tenant: str) -> bytes:
    return await reads.task(scope_id(tenant, req.task_id), req.consistent_with)


async def _list_tasks(reads: ReadService, req: ListTasksRequest, tenant: str) -> msgspec.Struct:
    filters: dict[str, str] = {"status": req.status} if req.status else {}
    return await reads.tasks(sort=req.sort, filters=filters, page_size=req.page_size, cursor=req.cursor, fields=None,
                             token=req.consistent_with, tenant=tenant)


async def _get_history(reads: ReadService, req: GetHistoryRequest, tenant: str) -> msgspec.Struct:
    stream_exists_check(req.stream)
    return await reads.history(scope_stream(tenant, req.stream), req.after_version, req.page_size,
                               req.consistent_with)


async def _get_budget(reads: ReadService, req: GetBudgetRequest, tenant: str) -> bytes:
    return await reads.project_part(scope_id(tenant, req.project_id), "budget", req.consistent_with)


async def _batch_get_shots(reads: ReadService, req: BatchGetShotsRequest, tenant: str) -> msgspec.Struct:
    check_ids(req.ids)
    items, missing = await reads.shots_by_id(scope_id(tenant, req.project_id), req.ids, req.consistent_with)
    return ShotBatch(items, missing)


async def _list_artifacts(reads: ReadService, req: ListArtifactsRequest, tenant: str) -> msgspec.Struct:
    filters = {k: v for k, v in (("kind", req.kind), ("shot_id", req.shot_id),
                                 ("task_id", req.task_id and scope_id(tenant, req.task_id))) if v}
    query = lists.parse_list_query(lists.ARTIFACTS, sort=req.sort, filters=filters, page_size=req.page_size,
                                   cursor=req.cursor, fields=None, scope=(req.project_id,))
    await reads.wait_consistent(req.consistent_with)
    rows, next_cursor = await lists.fetch_page(reads.pool, lists.ARTIFACTS, query, (scope_id(tenant, req.project_id),),
                                               tenant=tenant)
    return ArtifactPage([artifact_view(r) for r in rows], next_cursor)


async def _get_state_at(reads: ReadService, req: GetStateAtRequest, tenant: str) -> msgspec.Struct:
    stream_exists_check(req.stream)
    return await reads.state_at(scope_stream(tenant, req.stream), req.version, req.at, req.consistent_with)


async def _get_run(reads: ReadService, req: GetRunRequest, tenant: str) -> msgspec.Struct:
    await reads.wait_consistent(req.consistent_with)
    return await runs.run_summary(reads.pool, req.run_id, tenant=tenant)


async def _get_run_changes(reads: ReadService, req: GetRunChangesRequest, tenant: str) -> msgspec.Struct:
    await reads.wait_consistent(req.consistent_with)
    return await runs.run_changes(reads.pool, req.run_id, cursor=req.cursor, limit=req.page_size, tenant=tenant)


async def _get_run_effects(reads: ReadService, req: GetRunEffectsRequest, tenant: str) -> msgspec.Struct:
    await reads.wait_consistent(req.consistent_with)
    return await runs.run_effects(reads.pool, req.run_id, tenant=tenant)


HANDLERS: dict[str, Handler] = {
    "GetProject": _get_project,
    "GetTask": _get_task,
    "ListTasks": _list_tasks,
    "GetHistory": _get_history,
    "GetBudget": _get_budget,
    "BatchGetShots": _batch_get_shots,
    "ListArtifacts": _list_artifacts,
    "GetStateAt": _get_state_at,
    "GetRun": _get_run,
    "GetRunChanges": _get_run_changes,
    "GetRunEffects": _get_run_effects,
}


# ── Messages from the committed .proto ────────────────────────────────────────────────────────────


def proto_root() -> Path:
    """The folder the ``.proto`` paths are relative to (``schemas/proto``, shipped as package data)."""
    return Path(str(resources.files("blackboard.schemas") / "proto"))


@functools.cache
def message_classes() -> dict[str, type[Message]]:
    """Every message of the query ``.proto`` by short name, registered in the default descriptor pool.

    Note: the default pool is the one server reflection and ``json_format`` consult, which is why the
    file goes there; a second call returns the same classes.
    """
    pool = descriptor_pool.Default()
    for file in _compile(proto_root(), PROTO_PATH).file:
        try:
            pool.FindFileByName(file.name)
        except KeyError:
            pool.AddSerializedFile(file.SerializeToString())
    described = pool.FindFileByName(PROTO_PATH)
    return {name: message_factory.GetMessageClass(d) for name, d in described.message_types_by_name.items()}


def _compile(root: Path, path: str) -> descriptor_pb2.FileDescriptorSet:
    """``path`` (under ``root``) and its imports as a descriptor set, by grpc-tools' bundled protoc."""
    from grpc_tools import protoc  # imported here: it installs import hooks we do not otherwise want early

    include = Path(str(resources.files("grpc_tools") / "_proto"))
    with tempfile.TemporaryDirectory(prefix="blackboard-proto-") as tmp:
        out = Path(tmp) / "descriptors.pb"
        status = protoc.main(["protoc", f"-I{root}", f"-I{include}", "--include_imports",
                              f"--descriptor_set_out={out}", path])
        if status != 0:
            raise RuntimeError(f"protoc could not compile {root / path} (exit status {status}); see its stderr")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


# ── The server ────────────────────────────────────────────────────────────────────────────────────


@dataclass
class GrpcServer:
    """A started gRPC server and the port it bound (the one asked for, or the free one picked for 0)."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Answer NOT_SERVING to health checks, let running calls finish for ``grace`` seconds, stop."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_grpc(reads: ReadsGetter, host: str, port: int, auth: Authenticate,
                     *, service: Service = QUERY_SERVICE) -> GrpcServer:
    """Serve ``service`` on ``host:port`` (0: any free port), plus the standard health and reflection services.

    ``reads`` is asked for the current ``ReadService`` on every call, because a switch of read-model
    generation replaces it. Every call is admitted by ``auth`` with the key or token it presents, as over HTTP
    (metadata ``authorization: Bearer <key>`` or ``x-api-key``); health and reflection are open.
    """
    missing = {rpc.name for rpc in service.rpcs} - HANDLERS.keys()
    if missing:
        raise RuntimeError(f"no handler for the RPCs {sorted(missing)} of {service.full_name}")
    messages = message_classes()
    server = grpc.aio.server()
    methods = {rpc.name: _method(rpc, messages, reads, auth) for rpc in service.rpcs}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, methods),))
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (service.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    bound = server.add_insecure_port(_address(host, port))
    await server.start()
    for name in ("", service.full_name):
        await checker.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc.started", host=host, port=bound, service=service.full_name)
    return GrpcServer(server, bound, checker)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _method(rpc: Rpc, messages: dict[str, type[Message]], reads: ReadsGetter,
            auth: Authenticate) -> grpc.RpcMethodHandler:
    request_cls, response_cls = messages[rpc.request.__name__], messages[rpc.response.__name__]
    handler = HANDLERS[rpc.name]
    path = f"/{QUERY_SERVICE.full_name}/{rpc.name}"

    async def call(request: Message, context: grpc.aio.ServicerContext) -> Message:
        tenant = DEFAULT_TENANT
        try:
            principal = await auth(_presented(context.invocation_metadata() or ()), _peer_host(context.peer() or ""))
            tenant = principal.tenant
            service = reads()
            if service is None:
                raise ServiceUnavailable("the read side is not started", code="not_started")
            with reading_as(tenant):  # under row security, its reads see the caller's tenant's rows only
                doc = await handler(service, decode_request(request, rpc.request), tenant)
            body = unscope_json(tenant, doc if isinstance(doc, bytes) else msgspec.json.encode(doc))
            return json_format.Parse(body, response_cls())
        except ApiError as exc:
            await context.abort(status_of(exc), unscope_text(tenant, exc.message),
                                trailing_metadata=error_metadata(exc, path, tenant))
        except Exception as exc:
            # Never leak a stack trace, SQL or a secret: log it, answer a bare code.
            log.error("grpc.unexpected", rpc=rpc.name, error=repr(exc), exc_info=exc)
            unexpected = ApiError("an unexpected error occurred; it has been logged", code="internal_error",
                                  status=500)
            await context.abort(grpc.StatusCode.INTERNAL, unexpected.message,
                                trailing_metadata=error_metadata(unexpected, path))
        raise AssertionError("unreachable: abort raises")

    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=request_cls.FromString,
                                               response_serializer=response_cls.SerializeToString)


def decode_request(request: Message, struct: type[msgspec.Struct]) -> Any:
    """The protobuf request as its Struct, validated by the Struct's constraints (422 ``invalid_request``).

    Note: an unset proto3 field (0, "") is left out, so it takes the Struct's default.
    """
    fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
    try:
        # strict=False: the JSON mapping writes int64 as a string.
        return msgspec.convert(fields, struct, strict=False)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `")
        errors = [FieldError(path=path.rstrip("`") or "$", message=message)]
        raise InvalidRequest(f"the request is not valid: {exc}", errors=errors) from None


def status_of(exc: ApiError) -> grpc.StatusCode:
    """The gRPC status of an HTTP-status error: 4xx without a closer match → INVALID_ARGUMENT."""
    default = grpc.StatusCode.INVALID_ARGUMENT if exc.status < 500 else grpc.StatusCode.INTERNAL
    return _STATUS.get(exc.status, default)


def error_metadata(exc: ApiError, instance: str | None = None, tenant: str = DEFAULT_TENANT
                   ) -> tuple[tuple[str, str | bytes], ...]:
    """The error's code, its problem document (``instance``: the RPC's path; ids as ``tenant`` names them) and its
    HTTP headers (e.g. ``retry-after``, on every ``UNAVAILABLE``) in lower case, as trailing metadata."""
    headers = {k.lower(): v for k, v in exc.headers.items()}
    if retryable(exc.status):
        headers.setdefault("retry-after", str(RETRY_AFTER_SECONDS))
    problem = unscope_json(tenant, msgspec.json.encode(exc.body(instance)))
    return ((ERROR_CODE_KEY, exc.code), (PROBLEM_KEY, problem), *headers.items())


def _peer_host(peer: str) -> str:
    """The address of a gRPC peer (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``) without its port."""
    address = peer.partition(":")[2]
    return address.rpartition(":")[0].strip("[]") or peer


def _presented(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    values = {k: v for k, v in metadata if isinstance(v, str)}
    return presented_key(values.get("authorization"), values.get("x-api-key"))
