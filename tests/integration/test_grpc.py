"""The gRPC query API on the Kafka engine: the same documents as HTTP, errors with their codes, keys, health."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import msgspec
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import SecretStr

from blackboard.auth import Authenticator
from blackboard.config import Settings
from blackboard.query_api.grpc import ERROR_CODE_KEY, PROBLEM_KEY, message_classes, start_grpc
from blackboard.query_api.reads import ReadService
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.protogen import QUERY_SERVICE
from tests.integration.harness import command, running, settings_for

MESSAGES = message_classes()


@pytest.fixture
def kafka_settings(pg_url: str, topic_prefix: str, kafka_bootstrap: str, redis_url: str,
                   redis_prefix: str) -> Settings:
    return settings_for("kafka", pg_url=pg_url, topic_prefix=topic_prefix, kafka=kafka_bootstrap,
                        redis_url=redis_url, redis_prefix=redis_prefix, grpc_port=0)


class Client:
    """Calls the query service by RPC name, with the messages of the committed ``.proto``."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.channel, self.metadata = channel, metadata

    async def __call__(self, rpc: str, **fields: Any) -> Any:
        spec = next(r for r in QUERY_SERVICE.rpcs if r.name == rpc)
        request, response = MESSAGES[spec.request.__name__], MESSAGES[spec.response.__name__]
        method = self.channel.unary_unary(f"/{QUERY_SERVICE.full_name}/{rpc}",
                                          request_serializer=request.SerializeToString,
                                          response_deserializer=response.FromString)
        return await method(request(**fields), metadata=self.metadata, timeout=20)


@contextlib.asynccontextmanager
async def channel_to(port: int | None) -> AsyncIterator[grpc.aio.Channel]:
    assert port, "the runtime exposes the port its gRPC server bound"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel


def same(message: Message, http_json: bytes) -> bool:
    """The gRPC message holds exactly the data of the HTTP document."""
    return bool(message == json_format.Parse(http_json, type(message)()))


async def test_grpc_reads_are_the_http_documents(kafka_settings: Settings) -> None:
    async with running(kafka_settings) as (http, runtime), channel_to(runtime.grpc_port) as channel:
        call = Client(channel)
        created = await command(http, "project.create", "project:p-1",
                                {"title": "Trailer", "currency": "EUR", "budget_total": "100.00",
                                 "global_spec": {"style": "noir", "fps": 24}})
        shot = await command(http, "project.update_shot", "project:p-1",
                             {"shot_id": "s-1", "patch": {"status": "draft"}, "expected_version": 0})
        task = await command(http, "task.create", "task:t-1", {"name": "render", "priority": 5,
                                                              "payload": {"frames": [1, 2]}})
        assert created.status_code == shot.status_code == task.status_code == 200, task.text
        project_token, task_token = shot.json()["position"], task.json()["position"]

        project = await call("GetProject", project_id="p-1", consistent_with=project_token)
        http_project = await http.get("/v1/projects/p-1")
        assert same(project, http_project.content)
        assert (project.title, project.budget.total, project.version) == ("Trailer", "100.00", 2)
        assert project.shots["s-1"]["status"] == "draft" and project.global_spec["fps"] == 24
        assert project.created_at.ToDatetime().isoformat() == _naive_utc(http_project.json()["created_at"])

        got = await call("GetTask", task_id="t-1", consistent_with=task_token)
        assert same(got, (await http.get("/v1/tasks/t-1")).content)
        assert (got.status, got.priority, list(got.payload["frames"])) == ("pending", 5, [1, 2])

        listed = await call("ListTasks", status="pending", consistent_with=task_token)
        assert same(listed, (await http.get("/v1/tasks", params={"status": "pending"})).content)
        assert [t.id for t in listed.items] == ["t-1"] and not listed.HasField("next_cursor")

        history = await call("GetHistory", stream="project:p-1", page_size=1, consistent_with=project_token)
        http_history = await http.get("/v1/streams/project:p-1/history", params={"page_size": 1})
        assert same(history, http_history.content)
        assert {"/title", "/budget/total", "/spec/doc/fps"} <= {c.path for c in history.items[0].changes}
        assert [e.type for e in history.items] == ["project.created"] and history.next_cursor == "1"
        rest = await call("GetHistory", stream="project:p-1", after_version=1)
        assert [(e.version, e.actor) for e in rest.items] == [(2, "anonymous")]


async def test_grpc_budget_shots_artifacts_and_time_travel(kafka_settings: Settings) -> None:
    async with running(kafka_settings) as (http, runtime), channel_to(runtime.grpc_port) as channel:
        call = Client(channel)
        await command(http, "project.create", "project:p-1", {"title": "T", "currency": "EUR", "budget_total": "50"})
        for n in range(3):
            await command(http, "project.create_shot", "project:p-1", {"shot_id": f"s-{n}", "fields": {"n": n}})
        await command(http, "project.reserve_budget", "project:p-1",
                      {"reservation_id": "r-1", "amount": "5", "reason": "render"})
        last = await command(http, "project.register_artifact", "project:p-1",
                             {"artifact_id": "a-1", "kind": "video", "uri": "s3://b/a-1", "cost": "7",
                              "shot_id": "s-1"})
        assert last.status_code == 200, last.text
        token = last.json()["position"]

        budget = await call("GetBudget", project_id="p-1", consistent_with=token)
        assert same(budget, (await http.get("/v1/projects/p-1/budget")).content)
        assert (budget.spent, budget.reserved, [r.reservation_id for r in budget.reservations]) == ("7", "5", ["r-1"])

        shots = await call("BatchGetShots", project_id="p-1", ids=["s-2", "s-9", "s-0"], consistent_with=token)
        http_shots = await http.post("/v1/projects/p-1/shots/batch-get", json={"ids": ["s-2", "s-9", "s-0"]})
        assert same(shots, http_shots.content)
        assert [s["id"] for s in shots.items] == ["s-2", "s-0"] and list(shots.missing) == ["s-9"]

        artifacts = await call("ListArtifacts", project_id="p-1", kind="video", consistent_with=token)
        assert same(artifacts, (await http.get("/v1/projects/p-1/artifacts", params={"kind": "video"})).content)
        assert [(a.artifact_id, a.cost, a.shot_id) for a in artifacts.items] == [("a-1", "7", "s-1")]

        then = await call("GetStateAt", stream="project:p-1", version=2, consistent_with=token)
        assert same(then, (await http.get("/v1/streams/project:p-1/state", params={"version": 2})).content)
        assert then.version == 2 and json_format.MessageToDict(then)["state"]["shots"].keys() == {"s-0"}
        await _fails(call("GetStateAt", stream="project:p-1", version=99), grpc.StatusCode.NOT_FOUND,
                     "version_not_found")
        await _fails(call("BatchGetShots", project_id="p-1", ids=["s-1", "s-1"]), grpc.StatusCode.INVALID_ARGUMENT,
                     "duplicate_ids")


async def test_grpc_errors_carry_the_status_and_the_code(kafka_settings: Settings) -> None:
    async with running(kafka_settings) as (_, runtime), channel_to(runtime.grpc_port) as channel:
        call = Client(channel)
        await _fails(call("GetProject", project_id="p-missing"), grpc.StatusCode.NOT_FOUND, "project_not_found")
        await _fails(call("GetTask", task_id="t-missing"), grpc.StatusCode.NOT_FOUND, "task_not_found")
        await _fails(call("GetTask", task_id="bad id!"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")
        await _fails(call("ListTasks", page_size=501), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request")
        await _fails(call("ListTasks", cursor="nope"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_cursor")
        await _fails(call("GetHistory", stream="nocategory"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_stream")
        await _fails(call("GetTask", task_id="t-1", consistent_with="garbage"), grpc.StatusCode.INVALID_ARGUMENT,
                     "invalid_consistency_token")
        await _fails(call("GetTask", task_id="t-1", consistent_with="99:0"), grpc.StatusCode.INVALID_ARGUMENT,
                     "unknown_partition")

        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", QUERY_SERVICE.full_name):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert QUERY_SERVICE.full_name in await _reflected_services(channel)


async def test_grpc_calls_need_a_key_when_keys_are_configured(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"api_keys": SecretStr("k-alice=alice:rw,k-bob=bob:ro")})
    async with running(settings) as (_, runtime), channel_to(runtime.grpc_port) as channel:
        await _fails(Client(channel)("GetTask", task_id="t-1"), grpc.StatusCode.UNAUTHENTICATED,
                     "missing_credentials")
        await _fails(Client(channel, (("authorization", "Bearer nope"),))("GetTask", task_id="t-1"),
                     grpc.StatusCode.UNAUTHENTICATED, "invalid_credentials")
        for metadata in ((("authorization", "Bearer k-alice"),), (("x-api-key", "k-bob"),)):
            await _fails(Client(channel, metadata)("GetTask", task_id="t-1"), grpc.StatusCode.NOT_FOUND,
                         "task_not_found")
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def _fails(call: Any, status: grpc.StatusCode, code: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    metadata = dict(error.trailing_metadata() or ())
    assert (error.code(), metadata.get(ERROR_CODE_KEY)) == (status, code), error
    # The problem document the HTTP route would answer, with the same code.
    problem = msgspec.json.decode(metadata[PROBLEM_KEY], type=ErrorBody)
    assert (problem.code, problem.type) == (code, f"urn:blackboard:problem:{code}")
    assert (problem.instance or "").startswith(f"/{QUERY_SERVICE.full_name}/")
    if status == grpc.StatusCode.UNAVAILABLE:
        assert int(metadata["retry-after"]) >= 1
    if status != grpc.StatusCode.INTERNAL:
        assert error.details()


async def _reflected_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {s.name async for answer in answers for s in answer.list_services_response.service}


def _naive_utc(rfc3339: str) -> str:
    return datetime.fromisoformat(rfc3339).replace(tzinfo=None).isoformat()


async def test_an_unexpected_failure_is_internal_and_leaks_nothing() -> None:
    def broken() -> ReadService | None:
        raise RuntimeError("password=hunter2 in SELECT * FROM secrets")

    for reads, status, code in ((broken, grpc.StatusCode.INTERNAL, "internal_error"),
                                (lambda: None, grpc.StatusCode.UNAVAILABLE, "not_started")):
        server = await start_grpc(reads, "127.0.0.1", 0, lambda key, _: Authenticator({}).principal_for(key))
        try:
            async with channel_to(server.port) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await Client(channel)("GetTask", task_id="t-1")
                await _fails(Client(channel)("GetTask", task_id="t-1"), status, code)
                assert "hunter2" not in str(raised.value.details()) and "SELECT" not in str(raised.value.details())
        finally:
            await server.stop(grace=0)
