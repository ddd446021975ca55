"""The served OpenAPI document is a contract a generated client can use, and its docs page works offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from litestar.testing import TestClient

from blackboard.app import Runtime
from blackboard.config import Settings
from blackboard.http_app import build_app
from blackboard.openapi import component_name
from blackboard.openapi import document as dumped
from blackboard.query_api.document_http import ITEM_FIELDS
from blackboard.schemas.registry import COMMAND_TYPES
from blackboard.schemas.views import DocumentView

#: A Python repr that leaked into an example: ``Decimal('1')``, ``datetime.datetime(...)``, ``Struct(a=1)``.
REPR = re.compile(r"^[A-Za-z_][\w.]*\(.*\)$|^<[\w.]+ object at 0x", re.DOTALL)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Any]]:
    """The app of a runtime that is never started: its routes and document need no service."""
    runtime = Runtime(settings=Settings(), postgres_url="postgresql://nobody@127.0.0.1:1/none")
    with TestClient(build_app(runtime, manage_lifecycle=False)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def document(client: TestClient[Any]) -> dict[str, Any]:
    answer = client.get("/schema/openapi.json")
    assert answer.status_code == 200
    doc: dict[str, Any] = answer.json()
    return doc


def test_the_command_body_is_every_command_discriminated_by_type(document: dict[str, Any]) -> None:
    schema = document["paths"]["/v1/commands"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = {f"#/components/schemas/{component_name(name)}" for name in COMMAND_TYPES}
    assert {member["$ref"] for member in schema["oneOf"]} == refs
    assert schema["discriminator"]["propertyName"] == "type"
    components = document["components"]["schemas"]
    for name in COMMAND_TYPES:
        command = components[component_name(name)]
        assert command["properties"]["type"]["enum"] == [name]
        payload = command["properties"]["payload"]["$ref"].rsplit("/", 1)[1]
        assert payload == COMMAND_TYPES[name][1].__name__ and payload in components


def test_every_success_answer_has_a_schema(document: dict[str, Any]) -> None:
    """Every 2xx with a body says its shape: JSON answers a schema that is not a bare string; Server-Sent
    Events, bytes and the metrics text a typed string."""
    untyped = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2") or status == "204":
                    continue
                content = response.get("content", {})
                schemas = [media.get("schema") or {} for media in content.values()]
                json_schema = content.get("application/json", {}).get("schema", {"type": "object"})
                if not content or any(not {"type", "$ref", "oneOf", "anyOf"} & set(s) for s in schemas) \
                        or json_schema in ({}, {"type": "string"}):
                    untyped.append(f"{method.upper()} {path} {status}")
    assert untyped == []


#: Answers whose keys are free by design: the deciders' own diagnostics, for an operator.
FREE_FORM = {"GET /v1/partitions"}


def test_no_read_is_a_bare_object(document: dict[str, Any]) -> None:
    """A JSON answer names its fields: an object schema without properties (what Litestar makes of a ``dict``)
    tells a generated client nothing."""
    bare = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            schema = operation["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema")
            if schema is not None and schema.get("type") == "object" and "properties" not in schema:
                bare.append(f"{method.upper()} {path}")
    assert sorted(set(bare) - FREE_FORM) == []


def test_a_shot_and_a_document_have_their_own_schemas(document: dict[str, Any]) -> None:
    paths, components = document["paths"], document["components"]["schemas"]

    def answer(path: str) -> Any:
        return paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]

    assert answer("/v1/projects/{project_id}/shots/{shot_id}") == {"$ref": "#/components/schemas/ShotView"}
    shot = components["ShotView"]
    # A shot's own fields sit beside its id and version: the schema says so, or generators would forbid them.
    assert shot["required"] == ["id", "version"] and shot["additionalProperties"] is True
    assert answer("/v1/collections/{collection}/documents/{doc_id}") == {"$ref": "#/components/schemas/DocumentView"}
    fields = set(DocumentView.__struct_fields__)
    assert set(components["DocumentView"]["required"]) == fields == set(ITEM_FIELDS)


def test_every_error_is_a_problem_document(document: dict[str, Any]) -> None:
    """4xx and 5xx answers are the problem document (RFC 9457) with its code, and say so by their media type
    (409 of a command: the rejection, an outcome with its code); every 429 and 503 names Retry-After."""
    wrong = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if not status.startswith(("4", "5")):
                    continue
                if content.get("application/json", {}).get("schema") == {"$ref": "#/components/schemas/Rejected"}:
                    continue
                if list(content) != ["application/problem+json"] or content["application/problem+json"][
                        "schema"] != {"$ref": "#/components/schemas/ErrorBody"}:
                    wrong.append(f"{method.upper()} {path} {status}: {content}")
                if status in ("429", "503") and "Retry-After" not in response.get("headers", {}):
                    wrong.append(f"{method.upper()} {path} {status}: no Retry-After")
    assert wrong == []


def test_errors_and_rejections_are_typed(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/commands"]["post"]["responses"]
    assert responses["409"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Rejected"}
    problem = responses["422"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/ErrorBody"}
    required = set(document["components"]["schemas"]["ErrorBody"]["required"])
    assert {"type", "title", "status", "detail", "code", "message"} <= required


def test_an_api_key_is_declared_both_ways(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == (
        "apiKey", "header", "X-API-Key")
    assert {"bearer": []} in document["security"] and {"apiKey": []} in document["security"]


def _examples(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "examples":
                yield from (value.values() if isinstance(value, dict) else value)
            elif key == "example":
                yield value
            else:
                yield from _examples(value)
    elif isinstance(node, list):
        for item in node:
            yield from _examples(item)


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def test_no_example_is_a_python_repr(document: dict[str, Any]) -> None:
    examples = list(_examples(document))
    assert examples, "the command body at least has an example"
    assert [s for s in _strings(examples) if REPR.match(s)] == []


def test_the_repr_check_would_see_one() -> None:
    assert REPR.match("Decimal('1.5')") and REPR.match("CreateProject(title='t')")
    assert not REPR.match("project:p-1") and not REPR.match("Launch film")


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
def test_the_docs_page_loads_only_local_files(client: TestClient[Any], page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200
    html = answer.text
    parser = _Urls()
    parser.feed(html)
    assert len(parser.urls) >= 3
    assert [url for url in parser.urls if not url.startswith("/")] == []
    assert "//cdn" not in html and "https://" not in html.split("spec:")[0]
    for url in parser.urls:
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url


def test_the_dumped_document_is_the_served_one(client: TestClient[Any]) -> None:
    """``blackboard openapi`` (what clients are generated from) prints exactly what the server serves."""
    served = client.get("/schema/openapi.json").content
    assert dumped(client.app) == served


def test_free_form_objects_are_open(document: dict[str, Any]) -> None:
    """A ``dict[str, Any]`` field admits any keys: said explicitly, or generators type it as an empty object."""
    spec = document["components"]["schemas"]["CreateProject"]["properties"]["global_spec"]
    assert spec["additionalProperties"] is True
