"""Validation of ``POST /v1/commands`` bodies: every bad input gets its code and the path at fault."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.domain.decoding import (
    MAX_DEPTH,
    MAX_ITEMS,
    InvalidCommand,
    command_fingerprint,
    validate_command,
)
from blackboard.schemas.api import CommandRequest
from blackboard.schemas.project import AddCost, CreateProject, UpdateShot
from blackboard.schemas.task import MAX_DEPENDENCIES, MAX_SKILLS, CreateTask

COST = {"type": "project.add_cost", "stream": "project:p-1", "payload": {"amount": "1.00", "reason": "r"}}
SHOT = {"type": "project.update_shot", "stream": "project:p-1",
        "payload": {"shot_id": "s-1", "expected_version": 0, "patch": {"a": [0, 1, 2, 3]}}}


def body(base: dict[str, Any], **changes: Any) -> bytes:
    """``base`` as JSON, with top-level keys replaced (``None`` drops one) or ``payload`` entries merged."""
    doc = {**base, **{k: v for k, v in changes.items() if k != "payload"}}
    doc["payload"] = {**base["payload"], **changes.get("payload", {})}
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def cost(**payload: Any) -> bytes:
    return body(COST, payload=payload)


def patch(value: Any) -> bytes:
    return body(SHOT, payload={"patch": {"a": value}})


def refusal(raw: bytes) -> tuple[str, list[str]]:
    with pytest.raises(InvalidCommand) as caught:
        validate_command(raw)
    return caught.value.code, [e.path for e in caught.value.errors]


#: Levels of arrays left for the value of ``patch.a``: the request, its payload and the patch take three.
ROOM = MAX_DEPTH - 3


def patch_literal(literal: bytes) -> bytes:
    """A shot update whose patch sets ``a`` to a raw JSON literal."""
    return body(SHOT).replace(b"[0, 1, 2, 3]", literal)


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# ── malformed JSON: not JSON at all ────────────────────────────────────────────────────

MALFORMED = {
    "not json": b"{not json",
    "empty": b"",
    "truncated": cost()[:-3],
    "trailing garbage": cost() + b" x",
    "NaN": b'{"type": "project.add_cost", "stream": "project:p-1", "payload": {"amount": NaN}}',
    "Infinity": b'{"type": "project.add_cost", "stream": "project:p-1", "payload": {"amount": Infinity}}',
    "-Infinity": b'{"type": "project.add_cost", "stream": "project:p-1", "payload": {"amount": -Infinity}}',
    "duplicate keys": b'{"type": "task.create", "type": "project.create", "stream": "project:p-1", "payload": {}}',
    "duplicate nested keys": b'{"type": "project.add_cost", "stream": "project:p-1", '
                             b'"payload": {"amount": "1.00", "amount": "9.00", "reason": "r"}}',
    "not UTF-8": b'{"type": "project.add_cost", "stream": "\xff"}',
    "a surrogate encoded as UTF-8": b'{"type": "project.add_cost", "stream": "\xed\xa0\x80"}',
    "single quotes": b"{'type': 'project.add_cost'}",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_body_that_is_not_json_is_malformed(raw: bytes) -> None:
    assert refusal(raw) == ("malformed_json", ["$"])


# ── invalid commands: JSON that breaks the schema or the limits ────────────────────────

INVALID = {
    "escaped lone surrogate": (cost(reason="\ud800"), "$.payload.reason"),
    "lone surrogate in a key": (patch({"\udc00": 1}), '$.payload.patch.a["\\udc00"]'),
    "NUL in a string": (cost(reason="a\x00b"), "$.payload.reason"),
    "NUL in a key": (patch({"k\x00": 1}), '$.payload.patch.a["k\\u0000"]'),
    "too deep": (patch(nested(ROOM + 1)), "$.payload.patch.a" + "[0]" * ROOM),
    "far too deep for the parser": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "$"),
    "huge array": (patch(list(range(MAX_ITEMS + 1))), "$.payload.patch.a"),
    "huge object": (patch({f"k{i}": i for i in range(MAX_ITEMS + 1)}), "$.payload.patch.a"),
    "integer above 2^53": (patch([0, 1, 2, 2**53 + 1]), "$.payload.patch.a[3]"),
    "integer below -2^53": (patch(-(2**53) - 1), "$.payload.patch.a"),
    "integer of 5000 digits": (patch_literal(b"9" * 5000), "$.payload.patch.a"),
    "number beyond a float": (patch_literal(b"1e400"), "$.payload.patch.a"),
    "key of 257 characters": (patch({"k" * 257: 1}), "$.payload.patch.a." + "k" * 257),
    "money as a JSON number": (cost(amount=12.5), "$.payload.amount"),
    "money as an integer": (cost(amount=12), "$.payload.amount"),
    "negative money": (cost(amount="-1.00"), "$.payload.amount"),
    "zero amount": (cost(amount="0"), "$.payload.amount"),
    "zero amount with decimals": (cost(amount="0.00"), "$.payload.amount"),
    "money with 5 decimals": (cost(amount="1.00001"), "$.payload.amount"),
    "money with a trailing newline": (cost(amount="1.00\n"), "$.payload.amount"),
    "money in exponent notation": (cost(amount="1e3"), "$.payload.amount"),
    "unknown type": (body(COST, type="project.delete"), "$.type"),
    "type not a string": (body(COST, type=7), "$.type"),
    "wrong stream category": (body(COST, stream="task:p-1"), "$.stream"),
    "stream without category": (body(COST, stream="p-1"), "$.stream"),
    "stream id with a space": (body(COST, stream="project:p 1"), "$.stream"),
    "stream id with a newline": (body(COST, stream="project:p-1\n"), "$.stream"),
    "empty stream id": (body(COST, stream="project:"), "$.stream"),
    "stream id of 129 characters": (body(COST, stream="project:" + "p" * 129), "$.stream"),
    "unknown field in the payload": (cost(colour="red"), "$.payload.colour"),
    "unknown top-level field": (body(COST, actor="mallory"), "$.actor"),
    "missing field": (json.dumps({**COST, "payload": {"amount": "1.00"}}).encode(), "$.payload.reason"),
    "payload not an object": (json.dumps({**COST, "payload": [1]}).encode(), "$.payload"),
    "body not an object": (b"[1, 2]", "$"),
    "reason not a string": (cost(reason=5), "$.payload.reason"),
    "empty reason": (cost(reason=""), "$.payload.reason"),
    "expected_version negative": (body(COST, expected_version=-1), "$.expected_version"),
    "expected_version huge": (body(COST, expected_version=2**53 + 1), "$.expected_version"),
    "expected_version of 30 digits": (body(COST, expected_version=10**30), "$.expected_version"),
    "expected_version as a string": (body(COST, expected_version="1"), "$.expected_version"),
    "expected_version as a boolean": (body(COST, expected_version=True), "$.expected_version"),
    "command_id with a slash": (body(COST, command_id="a/b"), "$.command_id"),
    "command_id of 129 characters": (body(COST, command_id="c" * 129), "$.command_id"),
    "empty command_id": (body(COST, command_id=""), "$.command_id"),
    "correlation_id with a space": (body(COST, correlation_id="a b"), "$.correlation_id"),
    "causation_id with a newline": (body(COST, causation_id="a\n"), "$.causation_id"),
    "currency in lower case": (body({"type": "project.create", "stream": "project:p-1", "payload": {
        "title": "t", "currency": "eur", "budget_total": "1"}}), "$.payload.currency"),
    "shot id with a slash": (body(SHOT, payload={"shot_id": "s/1"}), "$.payload.shot_id"),
    "a reserved shot field": (body(SHOT, payload={"patch": {"version": 9}}), "$.payload"),
    "unknown task status": (body({"type": "task.set_status", "stream": "task:t-1",
                                  "payload": {"status": "exploded"}}), "$.payload.status"),
}


@pytest.mark.parametrize(("raw", "path"), INVALID.values(), ids=INVALID.keys())
def test_json_that_breaks_the_schema_is_an_invalid_command_at_its_path(raw: bytes, path: str) -> None:
    assert refusal(raw) == ("invalid_command", [path])


def test_every_bad_value_is_named_not_only_the_first() -> None:
    raw = body(COST, stream="task:x", command_id="a b", payload={"amount": "0", "colour": 1})
    assert refusal(raw) == ("invalid_command", ["$.stream", "$.command_id", "$.payload.amount"])


def test_an_error_says_what_was_expected() -> None:
    with pytest.raises(InvalidCommand) as caught:
        validate_command(body(COST, type="project.delete"))
    assert "project.add_cost" in caught.value.errors[0].message and "'project.delete'" in str(caught.value)


def test_money_errors_describe_money_rather_than_a_regex() -> None:
    with pytest.raises(InvalidCommand) as caught:
        validate_command(cost(amount="0"))
    assert caught.value.errors[0].message.startswith("Expected a decimal string greater than 0")


# ── accepted verbatim ──────────────────────────────────────────────────────────────────

STRANGE_BUT_VALID = {
    "zero-width space": "a\u200bb",
    "right-to-left override": "\u202eevil.exe",
    "Arabic": "مرحبا",
    "emoji": "🎬",
    "SQL": "'; DROP TABLE projects; -- %_ \\",
    "HTML": "<script>alert(1)</script>",
    "control characters but NUL": "\x01\x1f\x7f",
}


@pytest.mark.parametrize("text", STRANGE_BUT_VALID.values(), ids=STRANGE_BUT_VALID.keys())
def test_strange_but_valid_text_is_accepted_verbatim(text: str) -> None:
    valid = validate_command(cost(reason=text))
    assert isinstance(valid.payload, AddCost) and valid.payload.reason == text


def test_a_valid_command_comes_out_typed_with_its_category_and_stream_id() -> None:
    valid = validate_command(body(COST, command_id="c-1:retry.2", expected_version=3))
    assert (valid.category, valid.stream_id, valid.request.command_id) == ("project", "p-1", "c-1:retry.2")
    assert valid.payload == AddCost("1.00", "r") and valid.request.expected_version == 3


@pytest.mark.parametrize(
    "raw",
    [
        patch(nested(ROOM)),
        patch(list(range(MAX_ITEMS))),
        patch([2**53, -(2**53)]),
        patch({"k" * 256: 1.5}),
        body(COST, expected_version=2**53),
        body({"type": "project.create", "stream": "project:p-1",
              "payload": {"title": "t", "currency": "EUR", "budget_total": "0"}}),
        cost(amount="0.0001"),
        cost(amount="999999999999999.9999"),
    ],
    ids=["32 levels", "10,000 items", "±2^53", "key of 256", "version 2^53", "zero budget", "smallest", "largest"],
)
def test_values_at_the_limits_are_accepted(raw: bytes) -> None:
    validate_command(raw)


def test_a_shot_patch_keeps_its_json_values() -> None:
    valid = validate_command(patch({"x": [1.5, None, True, "s"]}))
    assert isinstance(valid.payload, UpdateShot) and valid.payload.patch == {"a": {"x": [1.5, None, True, "s"]}}


# ── fingerprint ────────────────────────────────────────────────────────────────────────


def request(raw: bytes) -> CommandRequest:
    return validate_command(raw).request


def test_the_fingerprint_ignores_key_order_and_whitespace() -> None:
    reordered = b'{"payload": {"reason": "r", "amount": "1.00"},\n "stream": "project:p-1", "type": "project.add_cost"}'
    assert command_fingerprint(request(reordered)) == command_fingerprint(request(body(COST)))
    assert validate_command(reordered).fingerprint == command_fingerprint(request(body(COST)))


@pytest.mark.parametrize(
    "other",
    [cost(amount="2.00"), body(COST, stream="project:p-2"), body(COST, expected_version=0),
     body(SHOT), cost(reason="r ")],
)
def test_the_fingerprint_tells_commands_apart(other: bytes) -> None:
    assert command_fingerprint(request(other)) != command_fingerprint(request(body(COST)))


def test_the_fingerprint_ignores_ids_that_do_not_change_the_command() -> None:
    same = body(COST, command_id="c-1", correlation_id="x", causation_id="y")
    fingerprint = command_fingerprint(request(same))
    assert fingerprint == command_fingerprint(request(body(COST))) and len(fingerprint) == 64


# ── properties ─────────────────────────────────────────────────────────────────────────

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
COMMAND_SHAPED = st.fixed_dictionaries(
    {"type": st.sampled_from(["project.create", "project.add_cost", "project.update_shot", "task.create",
                              "task.set_status", "nope"]),
     "stream": st.sampled_from(["project:p-1", "task:t-1", "x", "project:"]),
     "payload": st.dictionaries(st.sampled_from(["title", "currency", "budget_total", "amount", "reason",
                                                 "shot_id", "patch", "expected_version", "name", "status"]),
                                JSON_VALUES, max_size=5)},
    optional={"expected_version": JSON_VALUES, "command_id": st.text(max_size=5)},
)


def mutated(raw: bytes, data: st.DataObject) -> bytes:
    """``raw`` with a few bytes cut, replaced or inserted at random places."""
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        cut = data.draw(st.integers(0, 2))
        raw = raw[:at] + data.draw(st.binary(max_size=2)) + raw[at + cut:]
    return raw


def never_raises_anything_else(raw: bytes) -> None:
    try:
        validate_command(raw)
    except InvalidCommand as exc:
        assert exc.code in ("malformed_json", "invalid_command") and exc.errors
        assert all(e.path.startswith("$") for e in exc.errors)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_invalid_command(raw: bytes) -> None:
    never_raises_anything_else(raw)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_commands_raise_nothing_but_invalid_command(data: st.DataObject) -> None:
    never_raises_anything_else(mutated(body(data.draw(st.sampled_from([COST, SHOT]))), data))


@settings(max_examples=300, deadline=None)
@given(COMMAND_SHAPED | JSON_VALUES)
def test_arbitrary_json_raises_nothing_but_invalid_command(value: Any) -> None:
    never_raises_anything_else(json.dumps(value).encode())


@settings(max_examples=100, deadline=None)
@given(st.builds(CreateProject, title=st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t),
                 currency=st.sampled_from(["EUR", "USD"]),
                 budget_total=st.decimals(0, 10**6, places=2).map(lambda d: f"{abs(d):f}")))
def test_a_valid_payload_comes_back_as_itself(payload: CreateProject) -> None:
    raw = json.dumps({"type": "project.create", "stream": "project:p-1", "payload": {
        "title": payload.title, "currency": payload.currency, "budget_total": payload.budget_total}}).encode()
    assert validate_command(raw).payload == payload


TASK = {"type": "task.create", "stream": "task:t-1", "payload": {"name": "render"}}


def test_a_task_takes_skills_and_dependencies() -> None:
    valid = validate_command(body(TASK, payload={"required_skills": ["gpu", "ffmpeg-6"], "depends_on": ["t-0"]}))
    assert valid.payload == CreateTask("render", 0, None, ["gpu", "ffmpeg-6"], ["t-0"])


@pytest.mark.parametrize(("payload", "code", "path"), [
    ({"depends_on": ["t-0", "t-1"]}, "self_dependency", "$.payload.depends_on[1]"),
    ({"required_skills": ["gpu", "gpu"]}, "invalid_command", "$.payload"),
    ({"depends_on": ["t-0", "t-0"]}, "invalid_command", "$.payload"),
    ({"required_skills": ["gpu", "has space"]}, "invalid_command", "$.payload.required_skills[1]"),
    ({"required_skills": ["x" * 65]}, "invalid_command", "$.payload.required_skills[0]"),
    ({"required_skills": [f"s{i}" for i in range(MAX_SKILLS + 1)]}, "invalid_command", "$.payload.required_skills"),
    ({"depends_on": [f"t-{i}" for i in range(100, 101 + MAX_DEPENDENCIES)]}, "invalid_command",
     "$.payload.depends_on"),
    ({"depends_on": ["task:t-0"]}, "invalid_command", "$.payload.depends_on[0]"),
    ({"depends_on": "t-0"}, "invalid_command", "$.payload.depends_on"),
])
def test_bad_skills_and_dependencies_are_refused_at_their_path(payload: dict[str, Any], code: str, path: str) -> None:
    assert refusal(body(TASK, payload=payload)) == (code, [path])


def test_a_duplicate_names_the_value_and_a_bad_skill_describes_a_skill() -> None:
    with pytest.raises(InvalidCommand, match="required_skills lists 'gpu' more than once"):
        validate_command(body(TASK, payload={"required_skills": ["gpu", "gpu"]}))
    with pytest.raises(InvalidCommand, match="Expected 1-64 characters"):
        validate_command(body(TASK, payload={"required_skills": ["-gpu"]}))
