"""Every HTTP route and gRPC method, asked by its own tenant, by another tenant and for an id that exists nowhere:
another tenant's id answers exactly as an id that exists nowhere (status and body, the request id aside).

One server (uvicorn on a loopback port, so that push routes stream, and gRPC on a free port) with API keys of
tenant ``acme``, which seeds one of everything that has an id, tenant ``beta``, which has nothing, and the default
tenant. The routes are read from the served OpenAPI document, never listed by hand: a path parameter, or a write,
that the tables below do not know fails ``test_the_tables_know_every_route``, so a new route is covered or the
suite fails. The gRPC methods are those of ``QUERY_SERVICE``, their request fields filled from the same table.

Each route with ids is asked

* by ``beta`` and by the default tenant for acme's ids, before acme created anything and after: both answers are
  the same (an id that exists nowhere, with the very same text, answers alike);
* by ``acme`` for ids of the same shape that were never created: beta's and the default tenant's answers for acme's
  ids equal this one once each id's text is replaced by a placeholder;
* by ``acme`` for its own ids: 2xx, so that the comparisons cannot pass by every answer being a 404.

A route without ids (a list, a statistic) answers ``beta`` and the default tenant after acme's seeding exactly as
before it, while acme's own answer changed. No answer to ``beta`` or the default tenant contains ``acme`` (the
tenant's name: in its stored ids and in the texts it seeded) or ``alice`` (its principal), and no answer to
``acme`` contains a stored id (``acme~``). A push route (Server-Sent Events) is compared on its status, media type
and its first event within a short window (a subscription to an existing stream starts with its history).

Writes that act on an existing id (claim, heartbeat, checkpoint save and restore, rollback, a task graph naming a
dependency) are compared the same way once every read is done (they change state), without the before/after case;
those that create what they name go last, so that another write cannot find what one of them made.

Left out, with the reason:

* ``POST /v1/commands``: pure command submission, with no id in its path; how a command's stream, command id and
  references are scoped to the sender's tenant is tested in ``test_tenants.py``.
* ``GET /metrics`` and ``GET /v1/partitions``: the process's own state for its operator (Prometheus metrics; the
  deciders' offsets, queues and counts), which moves with every request of every tenant; they are only checked to
  show nothing of acme's (its name, its principal) to another tenant. The server runs as a shared deployment should,
  with ``BLACKBOARD_PROTECT_METRICS_AND_SCHEMA``: ``/metrics`` counts commands by tenant, so it is an admin's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import httpx
import msgspec
import pytest
from google.protobuf import json_format
from pydantic import SecretStr

from blackboard.query_api.grpc import ERROR_CODE_KEY, PROBLEM_KEY, message_classes
from blackboard.schemas.envelope import decode_token, encode_token
from blackboard.schemas.protogen import QUERY_SERVICE
from tests.integration.harness import serving, settings_for

T = TypeVar("T")

TENANTS = ("acme", "beta", "default")
KEYS = SecretStr("k-acme=alice:rw:acme,k-beta=bob:rw:beta,k-default=dora:rw")
KEY = {"acme": "k-acme", "beta": "k-beta", "default": "k-default"}
#: What no answer to another tenant may contain: acme's name (in its stored ids, in the texts it seeded) and its
#: principal.
MARKERS = ("acme", "alice")
#: What no answer to acme may contain: its stored ids are shown as it named them.
STORED = "acme~"

#: acme's seeded ids, by the name of the path parameter (or gRPC request field) that names them. A route with a
#: parameter missing here fails the suite: seed one and add it.
IDS: dict[str, tuple[str, ...]] = {
    "project_id": ("prj-m1",),
    "shot_id": ("shot-m1",),
    "artifact_id": ("art-m1",),
    "task_id": ("task-m1",),
    "node_id": ("node-m1",),
    "name": ("lease-m1",),
    "collection": ("coll-m",),
    "doc_id": ("doc-m1",),
    "thread_id": ("thr-m1",),
    "seq": ("1",),
    "saga_id": ("saga-m1",),
    "run_id": ("run-m1",),
    "command_id": ("cmd-m1",),
    "stream": ("project:prj-m1", "task:task-m1", "task:task-m2", "node:node-m1", "lease:lease-m1",
               "doc:coll-m.doc-m1", "checkpoint:thr-m1", "saga:saga-m1"),
    # Only in bodies: the task a task graph creates.
    "new_task_id": ("graph-m1",),
}
#: gRPC request fields that hold a list of ids of a kind of ``IDS``.
ID_LISTS = {"ids": "shot_id"}
#: Parameters that are no id of a tenant's (kept as they are when the ids are replaced).
NOT_IDS = frozenset({"seq"})


def nowhere(value: str) -> str:
    """An id of the same shape as acme's ``value`` that nobody ever created (``prj-m1`` → ``prj-x1``)."""
    return value.replace("-m", "-x")


_ID_TEXTS = {text: f"<{value}>" for values in IDS.values() for value in values if nowhere(value) != value
             for text in (value, nowhere(value))}
_ID_PATTERN = re.compile(r"(?<![A-Za-z0-9_\-])(" + "|".join(
    re.escape(t) for t in sorted(_ID_TEXTS, key=len, reverse=True)) + r")(?![A-Za-z0-9_\-])")


def without_ids(text: str) -> str:
    """``text`` with each seeded id, and its never-created twin, replaced by the same placeholder."""
    return _ID_PATTERN.sub(lambda m: _ID_TEXTS[m[1]], text)


# ── answers ──────────────────────────────────────────────────────────────────────────────────────────────

#: Top-level keys of an answer that differ from one request to the next (and, for a write, from one command to
#: the next: its command id and position).
VOLATILE_KEYS = frozenset({"request_id", "instance"})
WRITE_VOLATILE_KEYS = VOLATILE_KEYS | {"command_id", "position"}
VOLATILE_HEADERS = frozenset({"date", "content-length", "x-request-id", "request-id", "traceparent", "tracestate",
                              "server", "transfer-encoding", "connection"})
#: How long a push route is listened to for its first event.
PUSH_WINDOW = 0.6
_FIRST_EVENT = re.compile(rb"(?:^|\n)data:[^\n]*\n(?:[^\n]+\n)*\n")


@dataclass(frozen=True)
class Answer:
    """What a caller saw: status (HTTP, or the gRPC code's name), media type, body and headers, the volatile parts
    left out."""

    status: str
    media: str
    body: str
    headers: tuple[tuple[str, str], ...] = ()

    def ok(self) -> bool:
        return self.status.startswith("2") or self.status == "OK"

    def without_ids(self) -> Answer:
        return Answer(self.status, self.media, without_ids(self.body),
                      tuple((k, without_ids(v)) for k, v in self.headers))

    def __str__(self) -> str:
        body = self.body if len(self.body) <= 400 else self.body[:400] + "…"
        return f"{self.status} {self.media} {body}" + (f" headers={dict(self.headers)}" if self.headers else "")


def canonical(body: bytes, media: str, volatile: frozenset[str]) -> str:
    if media.endswith("json") and body:
        try:
            value = json.loads(body)
        except ValueError:
            return body.decode("utf-8", "replace")
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in volatile}
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return body.decode("utf-8", "replace")


# ── HTTP routes and the requests made of them ───────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Body:
    json: Any = None
    content: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


#: A request body from the ids to name (``id_("task_id")``: acme's task, or the never-created one).
BodyOf = Callable[[Callable[[str], str]], Body]


def _json(make: Callable[[Callable[[str], str]], Any]) -> BodyOf:
    return lambda id_: Body(json=make(id_))


@dataclass(frozen=True)
class Asked:
    """How a route other than a plain GET is asked: its body variants, whether it only reads, and whether it
    creates what it names (asked after every other write, which must find nothing of the caller's there)."""

    bodies: tuple[BodyOf, ...]
    reads: bool = False
    creates: bool = False


ASKED: dict[tuple[str, str], Asked] = {
    ("post", "/v1/projects/{project_id}/shots/batch-get"): Asked(
        (_json(lambda id_: {"ids": [id_("shot_id")]}),), reads=True),
    ("post", "/v1/nodes/{node_id}/claim"): Asked((_json(lambda _: {}),)),
    ("post", "/v1/nodes/{node_id}/heartbeat"): Asked((_json(lambda _: {"status": "idle"}),)),
    ("put", "/v1/checkpoints/{thread_id}"): Asked(
        (lambda _: Body(content=b"checkpoint bytes", headers=(("Content-Type", "application/octet-stream"),)),),
        creates=True),
    ("post", "/v1/checkpoints/{thread_id}/restore"): Asked((_json(lambda _: {"seq": 1}),)),
    ("post", "/v1/runs/{run_id}/rollback"): Asked((_json(lambda _: {"dry_run": True}), _json(lambda _: {}))),
    ("post", "/v1/task-graphs"): Asked((_json(lambda id_: {"tasks": [
        {"id": id_("new_task_id"), "name": "graph", "depends_on": [id_("task_id")]}]}),), creates=True),
}
#: Routes left out, with the reason (see the module's docstring).
LEFT_OUT: dict[tuple[str, str], str] = {
    ("post", "/v1/commands"): "pure command submission; its scoping is tested in test_tenants.py",
}
#: Routes of the process's own state rather than of a tenant's data: only checked to name nothing of acme's to
#: another tenant (its name, its principal) and no stored id to acme.
OPERATOR_ROUTES = frozenset({("get", "/metrics"), ("get", "/v1/partitions")})
METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    params: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.template

    @property
    def reads(self) -> bool:
        return self.method == "get" or (self.key in ASKED and ASKED[self.key].reads)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.template}"


@dataclass(frozen=True)
class Target:
    """One request of a route: acme's values of its parameters, and one of its bodies."""

    route: Route
    values: tuple[tuple[str, str], ...]
    body: BodyOf | None = None
    variant: int = 0

    def id_(self, name: str, replaced: bool) -> str:
        value = dict(self.values).get(name) or IDS[name][0]
        return nowhere(value) if replaced and name not in NOT_IDS else value

    def path(self, replaced: bool) -> str:
        path = self.route.template
        for name, _ in self.values:
            path = path.replace("{" + name + "}", self.id_(name, replaced))
        return path

    def __str__(self) -> str:
        variant = f" (body {self.variant + 1})" if self.route.key in ASKED else ""
        return f"{self.route.method.upper()} {self.path(False)}{variant}"


def routes_of(document: dict[str, Any]) -> tuple[list[Route], list[str]]:
    """Every operation of the served document, and what the tables miss to ask each of them."""
    routes, gaps = [], []
    for template, operations in document["paths"].items():
        for method in METHODS:
            if method not in operations:
                continue
            params = tuple(re.findall(r"\{([^}]+)\}", template))
            route = Route(method, template, params)
            if route.key in LEFT_OUT:
                continue
            unknown = [p for p in params if p not in IDS]
            if unknown:
                gaps.append(f"{route}: no seeded id for parameter(s) {unknown}: seed one and add it to IDS")
            if method != "get" and route.key not in ASKED:
                gaps.append(f"{route}: a write the suite does not know how to ask: add it to ASKED (or LEFT_OUT, "
                            f"with the reason, in the module's docstring too)")
            routes.append(route)
    known = {r.key for r in routes} | set(LEFT_OUT)
    gaps += [f"{m.upper()} {t}: in ASKED or LEFT_OUT but not served" for m, t in (set(ASKED) | set(LEFT_OUT)) - known]
    return routes, gaps


def targets_of(route: Route) -> list[Target]:
    if any(p not in IDS for p in route.params):
        return []
    bodies: tuple[BodyOf | None, ...] = ASKED[route.key].bodies if route.key in ASKED else (None,)
    combos = itertools.product(*(IDS[p] for p in route.params))
    return [Target(route, tuple(zip(route.params, combo, strict=True)), body, i)
            for combo in combos for i, body in enumerate(bodies)]


async def ask(client: httpx.AsyncClient, who: str, target: Target, *, replaced: bool, token: str | None,
              key: str | None = None) -> Answer:
    """``who`` asks ``target`` for acme's ids (``replaced``: for the never-created ones)."""
    body = target.body(lambda name: target.id_(name, replaced)) if target.body else Body()
    headers = {"X-API-Key": KEY[who], **dict(body.headers)}
    if key is not None:
        headers["Idempotency-Key"] = key
    params = {"consistent_with": token} if token else {}
    volatile = VOLATILE_KEYS if target.route.reads else WRITE_VOLATILE_KEYS
    request = client.build_request(target.route.method.upper(), target.path(replaced), params=params,
                                   headers=headers, json=body.json, content=body.content)
    response = await client.send(request, stream=True)
    try:
        media = response.headers.get("content-type", "").split(";")[0].strip()
        if media == "text/event-stream":
            raw = await _first_event(response)
        else:
            raw = await response.aread()
    finally:
        await response.aclose()
    kept = tuple(sorted((k, v) for k, v in response.headers.items()
                        if k not in VOLATILE_HEADERS and k != "content-type"))
    return Answer(str(response.status_code), media, canonical(raw, media, volatile), kept)


async def _first_event(response: httpx.Response) -> bytes:
    """The bytes a push route sent within ``PUSH_WINDOW``, up to the end of its first event (its lines ended by
    ``\\n``: the server may end them with ``\\r\\n``)."""
    raw = got = b""
    chunks = response.aiter_raw()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PUSH_WINDOW
    while (left := deadline - loop.time()) > 0:
        try:
            raw += await asyncio.wait_for(anext(chunks), left)
        except (TimeoutError, StopAsyncIteration):
            break
        got = raw.replace(b"\r\n", b"\n")
        if match := _FIRST_EVENT.search(got):
            return got[:match.end()]
    return got


# ── gRPC ────────────────────────────────────────────────────────────────────────────────────────────────

MESSAGES = message_classes()


@dataclass(frozen=True)
class Rpc:
    name: str
    fields: tuple[tuple[str, Any], ...]

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.fields)})"


def rpcs() -> tuple[list[Rpc], list[str]]:
    """Every RPC of the query service with acme's ids in its request, and what the table misses to fill one."""
    calls, gaps = [], []
    for spec in QUERY_SERVICE.rpcs:
        choices: list[list[tuple[str, Any]]] = []
        for f in msgspec.structs.fields(spec.request):
            if f.name == "consistent_with":
                continue
            if f.name in IDS:
                choices.append([(f.name, v) for v in IDS[f.name]])
            elif f.name in ID_LISTS:
                choices.append([(f.name, IDS[ID_LISTS[f.name]])])
            elif f.name.endswith("_id") or f.name.endswith("_ids") or f.name == "stream":
                gaps.append(f"{spec.name}: no seeded id for field {f.name!r}: add it to IDS (or ID_LISTS)")
            elif f.required:
                gaps.append(f"{spec.name}: required field {f.name!r} is no id the suite knows how to fill")
        calls += [Rpc(spec.name, combo) for combo in itertools.product(*choices)]
    return calls, gaps


def _value(value: Any, replaced: bool) -> Any:
    """A request field's value (a tuple of ids as the list the message holds), never-created when ``replaced``."""
    if isinstance(value, tuple):
        return [nowhere(v) if replaced else v for v in value]
    return nowhere(value) if replaced else value


async def call(channel: grpc.aio.Channel, who: str, rpc: Rpc, *, replaced: bool, token: str | None) -> Answer:
    spec = next(r for r in QUERY_SERVICE.rpcs if r.name == rpc.name)
    request, response = MESSAGES[spec.request.__name__], MESSAGES[spec.response.__name__]
    method = channel.unary_unary(f"/{QUERY_SERVICE.full_name}/{rpc.name}",
                                 request_serializer=request.SerializeToString,
                                 response_deserializer=response.FromString)
    fields = {k: _value(v, replaced) for k, v in rpc.fields}
    if token:
        fields["consistent_with"] = token
    try:
        answer = await method(request(**fields), metadata=(("x-api-key", KEY[who]),), timeout=20)
    except grpc.aio.AioRpcError as error:
        trailers = dict(error.trailing_metadata() or ())
        problem = trailers.get(PROBLEM_KEY, b"")
        problem = canonical(problem if isinstance(problem, bytes) else problem.encode(), "json", VOLATILE_KEYS)
        return Answer(error.code().name, "grpc", json.dumps(
            {"details": error.details(), "code": trailers.get(ERROR_CODE_KEY), "problem": json.loads(problem or "{}")},
            sort_keys=True))
    return Answer("OK", "grpc", json.dumps(json_format.MessageToDict(answer), sort_keys=True))


# ── the server, before and after acme's seeding ─────────────────────────────────────────────────────────

Phase = dict[tuple[str, bool], dict[Any, Answer]]


@dataclass(repr=False)
class World:
    client: httpx.AsyncClient
    channel: grpc.aio.Channel
    routes: list[Route]
    gaps: list[str]
    rpcs: list[Rpc]
    token: str
    #: What acme's seeding was refused.
    refused: list[str] = field(default_factory=list)
    #: (who, replaced) → target or RPC → answer, before acme seeded anything.
    before: Phase = field(default_factory=dict)


async def limited(jobs: Iterable[Awaitable[T]], limit: int = 16) -> list[T]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(j) for j in jobs)))


def read_targets(routes: list[Route]) -> list[Target]:
    return [t for r in routes if r.reads for t in targets_of(r)]


def has_ids(what: Target | Rpc) -> bool:
    return bool(what.values if isinstance(what, Target) else what.fields)


async def snapshot(world: World, cases: Iterable[tuple[str, bool]], asked: Iterable[Target | Rpc],
                   token: str | None) -> Phase:
    """Each of ``asked`` (read routes, RPCs) asked by each of ``cases``: (who, for never-created ids)."""
    pairs = [(case, what) for case in cases for what in asked]
    answers = await limited(
        ask(world.client, who, what, replaced=replaced, token=token) if isinstance(what, Target)
        else call(world.channel, who, what, replaced=replaced, token=token) for (who, replaced), what in pairs)
    phase: Phase = {}
    for (case, what), answer in zip(pairs, answers, strict=True):
        phase.setdefault(case, {})[what] = answer
    return phase


class Seeder:
    """acme's commands, each accepted; the positions of all, as one consistency token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client, self.positions, self.refused = client, dict[int, int](), list[str]()

    def passed(self, position: str | None) -> None:
        for p, o in decode_token(position).items() if position else ():
            self.positions[p] = max(self.positions.get(p, -1), o)

    async def send(self, type_: str, stream: str, payload: dict[str, Any], **extra: Any) -> None:
        body = {"type": type_, "stream": stream, "payload": payload, **extra}
        answer = await self.client.post("/v1/commands", json=body, headers={"X-API-Key": KEY["acme"]})
        if answer.status_code != 200 or answer.json().get("outcome") != "accepted":
            self.refused.append(f"{type_} {stream}: {answer.status_code} {answer.text}")
            return
        self.passed(answer.json()["position"])

    async def until(self, path: str, done: Callable[[Any], bool], what: str) -> None:
        """Wait for acme's read of ``path`` to satisfy ``done`` (what a process manager does on its own)."""
        for _ in range(200):
            answer = await self.client.get(path, headers={"X-API-Key": KEY["acme"]})
            if answer.status_code == 200 and done(answer.json()):
                return
            await asyncio.sleep(0.05)
        self.refused.append(f"{what}: not seen within 10 s")

    async def route(self, method: str, path: str, **kwargs: Any) -> None:
        answer = await self.client.request(method, path, headers={"X-API-Key": KEY["acme"],
                                                                  **kwargs.pop("headers", {})}, **kwargs)
        if answer.status_code != 200:
            self.refused.append(f"{method} {path}: {answer.status_code} {answer.text}")
            return
        self.passed(answer.json().get("position"))


RUN = {"agent": {"run_id": "run-m1", "model": "model-acme", "prompt_hash": "sha256:acme"}}


async def seed(client: httpx.AsyncClient) -> tuple[str, list[str]]:
    """One of everything that has an id, in tenant acme: the token of all of it, and what was refused."""
    s = Seeder(client)
    await s.send("project.create", "project:prj-m1", {"title": "Acme film", "currency": "EUR", "budget_total": "100",
                                                      "global_spec": {"studio": "acme"}}, command_id="cmd-m1", **RUN)
    await s.send("project.create_shot", "project:prj-m1", {"shot_id": "shot-m1", "fields": {"note": "acme"}}, **RUN)
    await s.send("project.put_dna", "project:prj-m1", {"key": "hero", "value": {"by": "acme"},
                                                       "expected_version": 0}, **RUN)
    await s.send("project.reserve_budget", "project:prj-m1", {"reservation_id": "res-m1", "amount": "5",
                                                              "reason": "acme render"}, **RUN)
    await s.send("task.create", "task:task-m1", {"name": "acme render", "payload": {"by": "acme"}}, **RUN)
    await s.send("task.create", "task:task-m2", {"name": "acme review", "depends_on": ["task-m1"]}, **RUN)
    await s.send("project.register_artifact", "project:prj-m1", {
        "artifact_id": "art-m1", "kind": "video", "uri": "s3://acme/art-m1.mp4", "cost": "1", "shot_id": "shot-m1",
        "task_id": "task-m1"}, **RUN)
    await s.send("node.register", "node:node-m1", {"hostname": "acme-host", "skills": ["render"]})
    await s.route("POST", "/v1/nodes/node-m1/heartbeat", json={"status": "busy", "load": 1})
    await s.send("lease.acquire", "lease:lease-m1", {"holder": "holder-acme", "ttl_seconds": 600})
    await s.send("doc.create", "doc:coll-m.doc-m1", {"body": {"owner": "acme"}, "links": {"task_id": "task-m1"}})
    await s.route("PUT", "/v1/checkpoints/thr-m1", content=b"acme checkpoint",
                  headers={"Content-Type": "application/octet-stream"})
    await s.send("saga.start_artifact", "saga:saga-m1", {
        "project_id": "prj-m1", "amount": "2", "task": {"name": "acme saga", "max_attempts": 1},
        "artifact": {"artifact_id": "art-m2", "kind": "video", "uri": "s3://acme/art-m2.mp4"}}, **RUN)
    # The saga's manager reserves the budget, then records the step and creates the task; then it waits for the task
    # (nobody claims it before the writes' checks): every answer holds all of it.
    await s.until("/v1/streams/saga:saga-m1/history", lambda page: len(page["items"]) >= 2, "the saga's first step")
    await s.until("/v1/tasks/saga-saga-m1", lambda _: True, "the saga's task")
    return encode_token(s.positions), s.refused


@pytest.fixture(scope="module")
async def world(postgres_server_url: str, redis_server: str) -> AsyncIterator[World]:
    """One server for the module: its answers before acme's seeding, then seeded and caught up."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    parts = urlsplit(postgres_server_url)
    pg_url = urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
                            redis_url=redis_server, redis_prefix=f"t{uuid.uuid4().hex[:8]}:", api_keys=KEYS,
                            grpc_port=0, protect_metrics_and_schema=True)  # as a shared deployment runs
    try:
        async with serving(settings) as (client, runtime, _), \
                grpc.aio.insecure_channel(f"127.0.0.1:{runtime.grpc_port}") as channel:
            served = await client.get("/schema/openapi.json", headers={"X-API-Key": KEY["default"]})
            assert served.status_code == 200, served.text
            routes, route_gaps = routes_of(served.json())
            calls, rpc_gaps = rpcs()
            world = World(client, channel, routes, route_gaps + rpc_gaps, calls, token="")
            reads: list[Target | Rpc] = [*read_targets(routes), *calls]
            world.before = await snapshot(world, [("beta", False), ("default", False)], reads, None)
            # acme's own answers before are compared with those after only where there is no id.
            world.before |= await snapshot(world, [("acme", False)], [r for r in reads if not has_ids(r)], None)
            world.token, world.refused = await seed(client)
            yield world
    finally:
        admin = await asyncpg.connect(postgres_server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


# ── the checks ──────────────────────────────────────────────────────────────────────────────────────────


def leaks(who: str, answer: Answer) -> list[str]:
    text = (answer.body + json.dumps(answer.headers)).lower()
    if who == "acme":
        return [STORED] if STORED in text else []
    return [m for m in MARKERS if m in text]


class Findings(dict[str, list[str]]):
    """What went wrong, by route (or RPC) asked."""

    def add(self, what: Any, line: str) -> None:
        self.setdefault(str(what), []).append(line)

    def case(self, what: Any, who: str, answer: Answer, *references: tuple[str, Answer]) -> None:
        """``who``'s answer against the first reference it differs from, and the markers it names."""
        named = leaks(who, answer)
        differs = next(((name, ref) for name, ref in references if answer != ref), None)
        if differs is None and not named:
            return
        line = f"{who}: saw {answer}"
        if named:
            at = answer.body.lower().find(named[0])
            line += f"\n        which names {named}: …{answer.body[max(at - 80, 0):at + 40]}…"
        if differs is not None:
            line += f"\n        while {differs[0]} saw {differs[1]}"
        self.add(what, line)

    def report(self) -> str:
        lines = [f"{len(self)} route(s) or method(s) with findings:"]
        for what, found in self.items():
            lines += [f"  {what}"] + [f"    - {f}" for f in found]
        return "\n".join(lines)


def compare_reads(findings: Findings, what: Target | Rpc, before: Phase, after: Phase,
                  operator: bool = False) -> None:
    own = after[("acme", False)][what]
    if operator:
        for who in TENANTS:
            findings.case(what, who, after[(who, False)][what])
        return
    findings.case(what, "acme", own)
    if not own.ok():
        findings.add(what, f"acme asking its own ids saw {own}, not 2xx: the comparisons prove nothing")
    if not has_ids(what) and own == before[("acme", False)][what]:
        findings.add(what, f"acme's own answer did not change when it seeded its data, so an unchanged answer to "
                           f"another tenant proves nothing: {own}")
    nobody = after[("acme", True)][what].without_ids()
    for who in ("beta", "default"):
        references = [("the same caller asking the same ids before acme created them", before[(who, False)][what])]
        answer = after[(who, False)][what]
        if has_ids(what) and answer == references[0][1]:
            findings.case(what, f"{who} (ids replaced)", answer.without_ids(),
                          ("acme asking never-created ids (ids replaced)", nobody))
        findings.case(what, who, answer, *references)


#: Who asks, for never-created ids or not, once acme has seeded.
AFTER = [("acme", False), ("beta", False), ("default", False), ("acme", True)]


async def test_the_tables_know_every_route(world: World) -> None:
    assert not world.gaps, "\n".join(world.gaps)
    served = {r.key for r in world.routes}
    assert ("get", "/v1/projects/{project_id}") in served and len(world.rpcs) >= len(QUERY_SERVICE.rpcs)


async def test_acme_seeds_one_of_everything(world: World) -> None:
    assert not world.refused, "\n".join(world.refused)


async def test_every_read_route_answers_another_tenants_id_as_one_that_exists_nowhere(world: World) -> None:
    targets = read_targets(world.routes)
    after = await snapshot(world, AFTER, targets, world.token)
    findings = Findings()
    for target in targets:
        compare_reads(findings, target, world.before, after, operator=target.route.key in OPERATOR_ROUTES)
    assert not findings, findings.report()


async def test_every_grpc_method_answers_another_tenants_id_as_one_that_exists_nowhere(world: World) -> None:
    after = await snapshot(world, AFTER, world.rpcs, world.token)
    findings = Findings()
    for rpc in world.rpcs:
        compare_reads(findings, rpc, world.before, after)
    assert not findings, findings.report()


async def test_every_write_on_another_tenants_id_answers_as_on_one_that_exists_nowhere(world: World) -> None:
    """Last: the writes change state (beta's and the default tenant's first, acme's own at the end)."""
    writes = sorted((r for r in world.routes if not r.reads), key=lambda r: ASKED[r.key].creates)
    targets = [t for r in writes for t in targets_of(r)]
    findings = Findings()
    n = itertools.count()
    for target in targets:
        def asked(who: str, replaced: bool, t: Target = target) -> Awaitable[Answer]:
            return ask(world.client, who, t, replaced=replaced, token=world.token, key=f"k-{next(n)}")

        nobody = await asked("acme", True)
        for who in ("beta", "default"):
            answer = await asked(who, False)
            findings.case(target, f"{who} (ids replaced)", answer.without_ids(),
                          ("acme asking never-created ids (ids replaced)", nobody.without_ids()))
    for target in targets:
        own = await ask(world.client, "acme", target, replaced=False, token=world.token, key=f"k-{next(n)}")
        findings.case(target, "acme", own)
        if not own.ok():
            findings.add(target, f"acme asking its own ids saw {own}, not 2xx: the comparisons prove nothing")
    assert not findings, findings.report()
