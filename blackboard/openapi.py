"""The OpenAPI contract: what Litestar derives from the routes, completed with what it cannot see.

Note: the command route and the cluster writes read their raw body (their own validation gives precise
errors with JSON paths), and six reads answer pre-encoded bytes, so Litestar sees no body and no answer
type for them. Their shapes are taken here from the same Structs that decode and encode them, never
hand-copied, and added to the served document: ``POST /v1/commands`` is a union of every command type
discriminated by ``type``. (Litestar rebuilds ``components.schemas`` from its own registry, which
``OpenAPIConfig.components`` cannot reach, hence a render plugin over the finished document.)
"""

from __future__ import annotations

import copy
from importlib.resources import files
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Router
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.serialization import encode_json
from litestar.static_files import create_static_files_router

from blackboard.command_api.cluster_http import (
    ClaimAnswer,
    ClaimRequest,
    GraphAnswer,
    HeartbeatAnswer,
    HeartbeatRequest,
    TaskGraph,
)
from blackboard.schemas.api import Accepted, CommandRequest, ErrorBody, Rejected
from blackboard.schemas.command_schema import command_schema, envelope_fields
from blackboard.schemas.errors import PROBLEM_JSON, retryable
from blackboard.schemas.registry import COMMAND_TYPES
from blackboard.schemas.views import DocumentView, ProjectView, ShotView, TaskView

REF = "#/components/schemas/{name}"
JSON = "application/json"

#: Writes that read their raw body: (path, method) → the Struct the body is decoded into.
BODIES: dict[tuple[str, str], Any] = {
    ("/v1/nodes/{node_id}/claim", "post"): ClaimRequest,
    ("/v1/nodes/{node_id}/heartbeat", "post"): HeartbeatRequest,
    ("/v1/task-graphs", "post"): TaskGraph,
}

#: Routes whose 200 answer Litestar cannot type (pre-encoded bytes, a dict): (path, method) → its type.
ANSWERS: dict[tuple[str, str], Any] = {
    ("/v1/projects/{project_id}", "get"): ProjectView,
    ("/v1/tasks/{task_id}", "get"): TaskView,
    ("/v1/commands/{command_id}", "get"): Accepted | Rejected,
    ("/v1/nodes/{node_id}/claim", "post"): ClaimAnswer,
    ("/v1/nodes/{node_id}/heartbeat", "post"): HeartbeatAnswer,
    ("/v1/task-graphs", "post"): GraphAnswer,
    # A dict, which Litestar sees as any object: a shot's fields are the user's own; a document is a row.
    ("/v1/projects/{project_id}/shots/{shot_id}", "get"): ShotView,
    ("/v1/collections/{collection}/documents/{doc_id}", "get"): DocumentView,
}

#: Answers that carry more keys than their Struct names: a shot's own fields beside its id and version.
OPEN_ANSWERS = (ShotView,)

#: What a request body example looks like: a command that a fresh blackboard accepts.
EXAMPLE_PAYLOAD: dict[str, Any] = {"title": "Launch film", "currency": "EUR", "budget_total": "1000.00"}
COMMAND_EXAMPLE: dict[str, Any] = {"type": "project.create", "stream": "project:p-1", "payload": EXAMPLE_PAYLOAD}

#: What the command route answers to ``COMMAND_EXAMPLE``, and to a second creation of p-1 with another budget.
ANSWER_EXAMPLES = {
    "200": {"accepted": {"value": {
        "outcome": "accepted", "command_id": "c-1", "stream": "project:p-1", "version": 1, "position": "4:0",
        "events": [{"event_id": "0f8e2c1a9b7d4e6f", "type": "project.created", "stream": "project:p-1",
                    "stream_version": 1, "payload": {**EXAMPLE_PAYLOAD, "global_spec": {},
                                                      "status": "draft"}}]}}},
    "409": {"rejected": {"value": {
        "outcome": "rejected", "command_id": "c-2", "code": "already_exists",
        "message": "the project already exists with other values for budget_total",
        "details": {"fields": ["budget_total"]}}}},
}

ERROR_BODY = {"$ref": REF.format(name="ErrorBody")}
#: Errors any operation may answer, unless it describes them itself.
_ERRORS = {
    "400": "bad_request: the request is malformed",
    "401": "missing_credentials / invalid_credentials: the API key is missing or unknown",
    "422": "invalid_request: a parameter is not valid (each bad one named with its path in errors)",
    "429": "rate_limited: over the per-key rate limit, when one is configured; retry after Retry-After seconds",
    "500": "internal_error: an unexpected error; it has been logged",
}
#: The header of every answer that invites a retry.
RETRY_AFTER = {"Retry-After": {"description": "whole seconds to wait before trying again",
                               "schema": {"type": "integer", "minimum": 0}}}

#: ``GET /v1/commands/{id}`` while the command is being decided.
PENDING = {"description": "the command is being decided", "content": {JSON: {"schema": {
    "type": "object", "required": ["outcome", "command_id"],
    "properties": {"outcome": {"type": "string", "enum": ["pending"]}, "command_id": {"type": "string"}}}}}}

#: The push routes: Server-Sent Events whose ``data`` is a history entry in JSON.
EVENT_STREAM = {"text/event-stream": {"schema": {
    "type": "string", "description": "Server-Sent Events: id = the stream version, data = a history entry (JSON)"}}}

SECURITY = Components(security_schemes={
    "bearer": SecurityScheme(type="http", scheme="bearer",
                             description="Authorization: Bearer <API key or JWT>; a JWT's scopes are "
                                         "blackboard:read, blackboard:write[:<category>], blackboard:admin"),
    "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header",
                             description="the API key in the X-API-Key header"),
})
#: Either scheme; none when the server runs without keys (the default for a local blackboard).
SECURITY_REQUIREMENTS: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}, {}]


def component_name(command_type: str) -> str:
    """``project.create`` → ``ProjectCreateCommand``: the name of a command's body in the components."""
    words = command_type.replace(".", "_").split("_")
    return "".join(word.title() for word in words) + "Command"


def _command_schemas(envelope: dict[str, Any], payload_refs: list[dict[str, Any]]) -> dict[str, Any]:
    """One object schema per command type: its ``type`` fixed, its stream's category, its payload's Struct."""
    common = envelope_fields(envelope)
    return {component_name(name): command_schema(name, category, payload, common)
            for (name, (category, _)), payload in zip(COMMAND_TYPES.items(), payload_refs, strict=True)}


def _command_body(schemas: dict[str, Any]) -> dict[str, Any]:
    refs = {name: REF.format(name=component_name(name)) for name in COMMAND_TYPES}
    union = {"oneOf": [{"$ref": ref} for ref in refs.values()],
             "discriminator": {"propertyName": "type", "mapping": refs}}
    return {"required": True, "description": "one command; its payload's shape is chosen by its type",
            "content": {JSON: {"schema": union, "examples": {"project.create": {"value": COMMAND_EXAMPLE}}}}}


def _without_examples(node: Any) -> Any:
    """``node`` without the examples Litestar made up from random values (70-digit budgets, gibberish ids):
    the examples that remain are written ones (the Structs' ``Meta(examples=...)``, the command body's)."""
    if isinstance(node, dict):
        return {key: _without_examples(value) for key, value in node.items() if key != "examples"}
    if isinstance(node, list):
        return [_without_examples(item) for item in node]
    return node


def _binary_answers(paths: dict[str, Any]) -> None:
    """Bytes answered as they were stored (a checkpoint's state) say so: a binary string."""
    for item in paths.values():
        for operation in item.values():
            for response in operation.get("responses", {}).values():
                media = response.get("content", {}).get("application/octet-stream")
                if media is not None:
                    media["schema"] = {"type": "string", "format": "binary"}


def _typed_errors(paths: dict[str, Any]) -> None:
    """Every operation's errors as answered: the error body with its code.

    Note: Litestar documents a parameter it refuses as 400 with its own exception's shape; this server
    answers those 422 ``invalid_request`` with the error body (``blackboard.problems``), and 401 to a
    missing or unknown API key when keys are configured.
    """
    for path, item in paths.items():
        for operation in item.values() if path != "/metrics" else ():
            responses = operation.setdefault("responses", {})
            for status, description in _ERRORS.items():
                answered = responses.get(status, {}).get("content", {}).get(JSON, {}).get("schema", {})
                if status not in responses or answered.get("description") == "Validation Exception":
                    responses[status] = {"description": description, "content": {JSON: {"schema": ERROR_BODY}}}
            _as_problems(responses)


def _as_problems(responses: dict[str, Any]) -> None:
    """Each error answer as it leaves: ``application/problem+json``, with ``Retry-After`` when it invites a retry."""
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        content = response.setdefault("content", {})
        media = content.get(JSON) or content.get(PROBLEM_JSON) or {}
        if media.get("schema", ERROR_BODY).get("$ref", "").rsplit("/", 1)[-1] != "ErrorBody":
            continue  # an outcome, not an error (a command rejected by a rule: 409)
        content.pop(JSON, None)
        content[PROBLEM_JSON] = {**media, "schema": ERROR_BODY}
        if retryable(int(status)):
            response["headers"] = {**response.get("headers", {}), **RETRY_AFTER}


def _add_components(doc: dict[str, Any], types: list[Any]) -> list[dict[str, Any]]:
    """The references to ``types``, whose schemas (and those they name) join the document's components."""
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    open_names = {cls.__name__ for cls in OPEN_ANSWERS}
    for name, schema in components.items():
        schemas.setdefault(name, _open_objects(schema) | ({"additionalProperties": True} if name in open_names
                                                          else {}))
    return list(refs)


def _open_objects(schema: Any) -> Any:
    """``schema`` with every free-form object (``dict[str, Any]``) saying ``additionalProperties: true``.

    Note: the same meaning in JSON Schema, but a generator reads a bare ``{"type": "object"}`` as an object
    that has no keys (openapi-typescript: ``Record<string, never>``), which no value but ``{}`` would fit.
    """
    if isinstance(schema, dict):
        opened = {key: _open_objects(value) for key, value in schema.items()}
        if opened.get("type") == "object" and "properties" not in opened and "additionalProperties" not in opened:
            opened["additionalProperties"] = True
        return opened
    if isinstance(schema, list):
        return [_open_objects(item) for item in schema]
    return schema


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (Litestar's document) with the command union, the raw bodies and the pre-encoded answers."""
    doc: dict[str, Any] = _without_examples(copy.deepcopy(schema))
    _typed_errors(doc.get("paths", {}))
    payloads = [cls for _, cls in COMMAND_TYPES.values()]
    refs = _add_components(doc, [CommandRequest, *payloads, *BODIES.values(), *ANSWERS.values(), ErrorBody])
    envelope = doc["components"]["schemas"][refs[0]["$ref"].rsplit("/", 1)[1]]
    doc["components"]["schemas"].update(_command_schemas(envelope, refs[1:1 + len(payloads)]))
    paths = doc.get("paths", {})
    if "/v1/commands" in paths:
        paths["/v1/commands"]["post"]["requestBody"] = _command_body(doc["components"]["schemas"])
        for status, example in ANSWER_EXAMPLES.items():
            paths["/v1/commands"]["post"]["responses"][status]["content"][JSON]["examples"] = example
    body_refs = refs[1 + len(payloads):1 + len(payloads) + len(BODIES)]
    for (path, method), ref in zip(BODIES, body_refs, strict=True):
        if path in paths:
            paths[path][method]["requestBody"] = {"required": False, "content": {JSON: {"schema": ref}}}
    answer_refs = refs[1 + len(payloads) + len(BODIES):-1]  # the last: ErrorBody, for _typed_errors
    for (path, method), ref in zip(ANSWERS, answer_refs, strict=True):
        if path in paths:
            paths[path][method]["responses"]["200"]["content"] = {JSON: {"schema": ref}}
    for path, item in paths.items():
        if path.endswith("/changes") and "get" in item:
            item["get"]["responses"]["200"]["content"] = EVENT_STREAM
    _binary_answers(paths)
    if "/metrics" in paths:
        paths["/metrics"]["get"]["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    if "/v1/commands/{command_id}" in paths:
        paths["/v1/commands/{command_id}"]["get"]["responses"]["202"] = PENDING
    return doc


def document(app: Litestar) -> bytes:
    """The JSON document ``app`` serves at ``/schema/openapi.json``, built without serving anything."""
    return encode_json(complete(app.openapi_schema.to_schema()))


class ContractJson(JsonRenderPlugin):
    """Serves ``openapi.json``: Litestar's document, completed (once: the document does not change)."""

    def __init__(self) -> None:
        super().__init__()
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            self._rendered = self.render_json(request, complete(openapi_schema))
        return self._rendered


#: Swagger UI's own files, from the ``swagger-ui-bundle-v2`` wheel: the docs page never loads a script from
#: elsewhere.
ASSETS = "/assets"


def _swagger_assets() -> Path:
    """The wheel's one ``vendor/swagger-ui-<version>`` folder (its name changes with every release)."""
    vendor = files("swagger_ui_bundle") / "vendor"
    (folder,) = (entry for entry in vendor.iterdir() if entry.name.startswith("swagger-ui-"))
    return Path(str(folder))


class LocalSwagger(SwaggerRenderPlugin):
    """Swagger UI at ``/schema/swagger`` (and ``/schema``), showing the completed contract, its scripts, style
    and icon served by this server under ``/schema/assets``: the page works offline."""

    def __init__(self, schema_path: str) -> None:
        base = f"{schema_path}{ASSETS}"
        super().__init__(path=["/", "/swagger"], js_url=f"{base}/swagger-ui-bundle.js",
                         css_url=f"{base}/swagger-ui.css",
                         standalone_preset_js_url=f"{base}/swagger-ui-standalone-preset.js",
                         favicon=f"<link rel='icon' type='image/png' href='{base}/favicon-32x32.png'>")
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            self._rendered = super().render(request, complete(openapi_schema))
        return self._rendered

    def receive_router(self, router: Router) -> None:
        super().receive_router(router)
        router.register(create_static_files_router(path=ASSETS, directories=[_swagger_assets()],
                                                   include_in_schema=False, send_as_attachment=False))
