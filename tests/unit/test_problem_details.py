"""Every route of the OpenAPI document answers a bad request with an RFC 9457 problem document.

The app of a runtime that is never started: each request is refused before it would reach a service
(a wrong method, a body that is not JSON, a parameter out of its bounds), or finds the read side not
started (503 with Retry-After).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from blackboard.app import Runtime
from blackboard.config import Settings
from blackboard.http_app import build_app
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.errors import PROBLEM_JSON, TYPE_PREFIX, title_of

PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _app(**settings: Any) -> TestClient[Any]:
    runtime = Runtime(settings=Settings(**settings), postgres_url="postgresql://nobody@127.0.0.1:1/none")
    return TestClient(build_app(runtime, manage_lifecycle=False))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient[Any]]:
    with _app() as test_client:
        yield test_client


@pytest.fixture(scope="module")
def operations(client: TestClient[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    paths = client.get("/schema/openapi.json").json()["paths"]
    found = [(path, method, operation) for path, item in paths.items() for method, operation in item.items()]
    assert len(found) > 30, "the document lists every route"
    return found


def assert_problem(response: Any, path: str) -> ErrorBody:
    """``response`` is a problem document about ``path``, consistent with itself and with its status."""
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON, (path, response.text)
    body = msgspec.json.decode(response.content, type=ErrorBody, strict=True)
    assert body.status == response.status_code, response.text
    assert (body.type, body.title, body.detail) == (TYPE_PREFIX + body.code, title_of(body.code), body.message)
    assert body.instance == path and body.code and body.detail
    if response.status_code in (429, 503):
        assert int(response.headers["retry-after"]) >= 0
    return body


def _filled(path: str, value: str) -> str:
    return PARAM.sub(value, path)


def _bad_request(path: str, method: str, operation: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """A request to this operation that it refuses: a body that is not JSON (or not bytes), else a path
    parameter past its bounds, else a query parameter of the wrong type, else a method it does not allow."""
    if method in ("post", "put"):
        return method, _filled(path, "p-1"), {"content": b"\x00not json", "headers": {"content-type": "text/plain"}}
    if PARAM.search(path):
        return method, _filled(path, "x" * 300), {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "query" and parameter.get("schema", {}).get("type") == "integer":
            return method, path, {"params": {parameter["name"]: "not-a-number"}}
    return "patch", path, {}


def test_every_route_answers_a_bad_request_with_a_problem(
        client: TestClient[Any], operations: list[tuple[str, str, dict[str, Any]]]) -> None:
    answered: dict[str, int] = {}
    for path, method, operation in operations:
        verb, url, options = _bad_request(path, method, operation)
        response = client.request(verb.upper(), url, **options)
        assert 400 <= response.status_code < 500 or response.status_code == 503, (verb, url, response.text)
        assert_problem(response, url)
        answered[f"{verb.upper()} {path}"] = response.status_code
    # The walk reached each kind of refusal, not one kind many times.
    assert {405, 415, 422} <= set(answered.values()), answered


def test_every_route_refuses_a_method_it_does_not_have(
        client: TestClient[Any], operations: list[tuple[str, str, dict[str, Any]]]) -> None:
    for path in {path for path, _, _ in operations}:
        url = _filled(path, "p-1")
        body = assert_problem(client.request("PATCH", url), url)
        assert (body.status, body.code) == (405, "method_not_allowed"), url


@pytest.mark.parametrize(("method", "url", "options", "status", "code"), [
    ("GET", "/v1/nothing-here", {}, 404, "not_found"),
    ("POST", "/v1/commands", {"content": b'{"type": "project.create"', "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("POST", "/v1/commands", {"content": b"{}", "headers": {"content-type": "application/json; charset=latin-1"}},
     415, "unsupported_media_type"),
    ("POST", "/v1/projects/p-1/shots/batch-get", {"content": b'{"ids": ["s-1"]}'}, 415, "unsupported_media_type"),
    ("POST", "/v1/projects/p-1/shots/batch-get",
     {"content": b'{"ids": ["s-1"]', "headers": {"content-type": "application/json"}}, 400, "malformed_json"),
    ("POST", "/v1/projects/p-1/shots/batch-get",
     {"content": b"[1]", "headers": {"content-type": "application/json"}}, 422, "invalid_request"),
    ("POST", "/v1/projects/p-1/shots/batch-get",
     {"content": b'{"ids": ["s-1"]}', "headers": {"content-type": "application/json;charset=latin-1"}},
     415, "unsupported_media_type"),
    ("POST", "/v1/nodes/n-1/heartbeat", {"content": b"[", "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("POST", "/v1/task-graphs", {"content": b'{"tasks": []}', "headers": {"content-type": "application/json"}},
     422, "invalid_request"),
    ("POST", "/v1/checkpoints/t-1/restore", {"content": b'{"seq": 1}'}, 415, "unsupported_media_type"),
    ("POST", "/v1/runs/r-1/rollback", {"content": b"{", "headers": {"content-type": "application/json"}},
     400, "malformed_json"),
    ("POST", "/v1/commands", {"content": b"x" * 2_000_000, "headers": {"content-type": "application/json"}},
     413, "payload_too_large"),
    ("GET", "/v1/projects/p-1", {}, 503, "not_started"),
])
def test_each_kind_of_refusal(client: TestClient[Any], method: str, url: str, options: dict[str, Any],
                              status: int, code: str) -> None:
    body = assert_problem(client.request(method, url, **options), url)
    assert (body.status, body.code) == (status, code), body
    if status in (400, 422) and url != "/v1/commands":
        assert body.errors and all(e.path.startswith("$") for e in body.errors), body


def test_credentials_refused_are_problems() -> None:
    with _app(api_keys="k-r=reader:ro") as client:
        missing = assert_problem(client.get("/v1/projects/p-1"), "/v1/projects/p-1")
        wrong = assert_problem(client.get("/v1/projects/p-1", headers={"X-API-Key": "nope"}), "/v1/projects/p-1")
        read_only = client.post("/v1/commands", headers={"X-API-Key": "k-r"}, json={})
        assert (missing.status, missing.code, wrong.code) == (401, "missing_credentials", "invalid_credentials")
        assert (assert_problem(read_only, "/v1/commands").code, read_only.status_code) == ("insufficient_scope", 403)
        assert "insufficient_scope" in read_only.headers["www-authenticate"]


def test_a_rate_limit_is_a_problem_with_retry_after() -> None:
    with _app(rate_limit_per_second=1) as client:
        answers = [client.get("/v1/tasks", params={"page_size": "x"}) for _ in range(3)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited, [a.status_code for a in answers]
        assert assert_problem(limited[0], "/v1/tasks").code == "rate_limited"


def test_not_ready_says_when_to_ask_again(client: TestClient[Any]) -> None:
    """Readiness is a status document, not a problem; its 503 still says when to come back."""
    ready = client.get("/health/ready")
    assert (ready.status_code, ready.json()["status"], ready.headers["retry-after"]) == (503, "not_ready", "1")


def test_a_title_is_the_code_in_words() -> None:
    assert [title_of(c) for c in ("malformed_json", "read_only_key", "dna_entry_not_found")] == [
        "Malformed JSON", "Read only key", "DNA entry not found"]
