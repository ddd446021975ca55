"""The document decider and the rules of the known collections: given / when / then, and properties."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.domain import document as doc
from blackboard.domain.decider import Context, Rejection
from blackboard.query_api.document_http import parse_where
from blackboard.schemas.document import (
    COLLECTION_RULES,
    CreateDocument,
    DeleteDocument,
    DocumentCreated,
    DocumentDeleted,
    DocumentPatched,
    PatchDocument,
    check_document,
    is_collection,
    split_document_id,
)
from blackboard.schemas.errors import InvalidRequest
from blackboard.schemas.merge_patch import merge_patch

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def ctx(ident: str = "notes.n-1", actor: str = "alice") -> Context:
    return Context(now=NOW, actor=actor, stream=f"doc:{ident}")


def given_events(*events: Any) -> doc.Document | None:
    state = doc.initial_state
    for event in events:
        state = doc.evolve(state, event)
    return state


def run(state: doc.Document | None, command: Any, ident: str = "notes.n-1", actor: str = "alice"
        ) -> tuple[list[Any] | Rejection, doc.Document | None]:
    """Decide, and fold the accepted events: (result, state after)."""
    result = doc.decide(state, command, ctx(ident, actor))
    after = state
    if not isinstance(result, Rejection):
        for event in result:
            after = doc.evolve(after, event)
    return result, after


def code(result: list[Any] | Rejection) -> str | None:
    return result.code if isinstance(result, Rejection) else None


REVIEW = DocumentCreated("reviews", "r-1", {"status": "awaiting_review"}, {"task_id": "t-1"}, "alice")


# ── stream ids ──────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("ident, expected", [
    ("reviews.r-1", ("reviews", "r-1")), ("my_kind-2.a.b", ("my_kind-2", "a.b")),
    ("Reviews.r-1", None), ("1x.r", None), ("reviews", None), ("reviews.", None), (".r-1", None),
    ("x" * 65 + ".r", None), ("reviews.-r", None),
    # A tenant's stored id: its collection as stored, checked as its tenant named it.
    ("acme~reviews.r-1", ("acme~reviews", "r-1")), ("acme~Reviews.r-1", None), ("acme~.r-1", None),
])
def test_split_document_id(ident: str, expected: tuple[str, str] | None) -> None:
    assert split_document_id(ident) == expected


def test_collection_names_refuse_a_trailing_newline() -> None:
    assert is_collection("reviews") and not is_collection("reviews\n")


# ── create / patch / delete ─────────────────────────────────────────────────────────────


def test_create_records_body_links_and_actor() -> None:
    result, state = run(None, CreateDocument({"text": "hi"}, {"task_id": "t-1"}))
    assert result == [DocumentCreated("notes", "n-1", {"text": "hi"}, {"task_id": "t-1"}, "alice")]
    assert state == doc.Document("notes", "n-1", {"text": "hi"}, {"task_id": "t-1"}, False, "alice", "alice")


def test_a_bad_collection_is_refused() -> None:
    result, _ = run(None, CreateDocument({}), ident="Bad.n-1")
    assert code(result) == "invalid_collection"


def test_a_tenants_document_keeps_its_collections_rules_in_its_own_collection() -> None:
    result, state = run(None, CreateDocument({}), ident="acme~reviews.r-1")
    assert result == [DocumentCreated("acme~reviews", "r-1", {"status": "awaiting_review"}, {}, "alice")]
    assert state is not None and (state.collection, state.doc_id) == ("acme~reviews", "r-1")
    assert code(run(state, PatchDocument({"status": "maybe"}), ident="acme~reviews.r-1")[0]) == "invalid_document"
    assert code(run(None, CreateDocument({"scores": {"x": "high"}}), ident="acme~evaluations.e-1")[0]) == \
        "invalid_document"


def test_create_again_the_same_is_nothing_and_another_is_already_exists() -> None:
    state = given_events(DocumentCreated("notes", "n-1", {"a": 1}, {}, "alice"))
    assert run(state, CreateDocument({"a": 1}))[0] == []
    assert code(run(state, CreateDocument({"a": 2}))[0]) == "already_exists"


def test_patch_merges_and_records_who() -> None:
    state = given_events(DocumentCreated("notes", "n-1", {"a": 1, "b": {"c": 2}}, {}, "alice"))
    result, after = run(state, PatchDocument({"b": {"c": None, "d": 3}}), actor="bob")
    assert result == [DocumentPatched({"b": {"c": None, "d": 3}}, "bob")]
    assert after is not None and after.body == {"a": 1, "b": {"d": 3}} and after.updated_by == "bob"
    assert after.created_by == "alice"


def test_patch_that_changes_nothing_appends_nothing() -> None:
    state = given_events(DocumentCreated("notes", "n-1", {"a": 1}, {}, "alice"))
    assert run(state, PatchDocument({"a": 1, "z": None}))[0] == []


def test_patch_or_delete_of_a_missing_document_is_not_found() -> None:
    assert code(run(None, PatchDocument({"a": 1}))[0]) == "not_found"
    assert code(run(None, DeleteDocument())[0]) == "not_found"


def test_a_deleted_document_takes_no_patch_and_deleting_again_is_nothing() -> None:
    state = given_events(DocumentCreated("notes", "n-1", {"a": 1}, {}, "alice"), DocumentDeleted("bob", "dup"))
    assert state is not None and state.deleted and state.delete_reason == "dup"
    assert code(run(state, PatchDocument({"a": 2}))[0]) == "document_deleted"
    assert code(run(state, CreateDocument({"a": 1}))[0]) == "document_deleted"
    assert run(state, DeleteDocument())[0] == []


# ── rules of the known collections ──────────────────────────────────────────────────────


def test_a_review_is_created_awaiting_review() -> None:
    result, state = run(None, CreateDocument({"reviewer": "carol"}), ident="reviews.r-1")
    assert state is not None and state.body == {"status": "awaiting_review", "reviewer": "carol"}
    assert not isinstance(result, Rejection)
    refused, _ = run(None, CreateDocument({"status": "approved"}), ident="reviews.r-1")
    assert isinstance(refused, Rejection) and refused.code == "illegal_transition"
    assert refused.details["allowed"] == ["awaiting_review"]


@pytest.mark.parametrize("to", ["approved", "rejected"])
def test_a_review_moves_once_from_awaiting_review(to: str) -> None:
    result, state = run(given_events(REVIEW), PatchDocument({"status": to, "notes": "ok"}), ident="reviews.r-1")
    assert result == [DocumentPatched({"status": to, "notes": "ok"}, "alice")]
    back, _ = run(state, PatchDocument({"status": "awaiting_review"}), ident="reviews.r-1")
    assert isinstance(back, Rejection) and back.code == "illegal_transition" and back.details["allowed"] == []
    notes, _ = run(state, PatchDocument({"notes": "later"}), ident="reviews.r-1")
    assert not isinstance(notes, Rejection)


@pytest.mark.parametrize("patch", [{"status": "done"}, {"status": None}, {"reviewer": 3}, {"notes": ["x"]}])
def test_a_review_body_keeps_its_shape(patch: dict[str, Any]) -> None:
    result, _ = run(given_events(REVIEW), PatchDocument(patch), ident="reviews.r-1")
    assert code(result) == "invalid_document"


@pytest.mark.parametrize("body, ok", [
    ({"task_id": "t-1", "guidance": "use the wide lens"}, True),
    ({"task_id": "t-1"}, False), ({"guidance": "x"}, False), ({"task_id": 1, "guidance": "x"}, False),
])
def test_corrections_need_task_id_and_guidance(body: dict[str, Any], ok: bool) -> None:
    assert (check_document("corrections", None, body) is None) is ok


@pytest.mark.parametrize("body, ok", [
    ({"scores": {"clarity": 4, "accuracy": 0.5}}, True), ({"scores": {}, "task_id": "t-1"}, True),
    ({"scores": {"clarity": "4"}}, False), ({"scores": {"clarity": True}}, False),
    ({"scores": {"clarity": float("inf")}}, False), ({"scores": [1]}, False), ({}, False),
    ({"scores": {}, "task_id": 7}, False),
])
def test_evaluations_need_finite_scores(body: dict[str, Any], ok: bool) -> None:
    assert (check_document("evaluations", None, body) is None) is ok


def test_a_broken_rule_names_the_field() -> None:
    broken = check_document("corrections", None, {"task_id": "t-1"})
    assert broken is not None and broken.details["path"] == "$.body.guidance"


def test_any_other_collection_is_free_form() -> None:
    assert check_document("notes", None, {"anything": [1, {"goes": None}]}) is None


# ── where= ──────────────────────────────────────────────────────────────────────────────


def test_where_is_canonical_json() -> None:
    assert parse_where(None) == "{}"
    assert parse_where('{"b": 1, "a": {"é": [1]}}') == '{"a":{"é":[1]},"b":1}'


@pytest.mark.parametrize("raw", ["{", "[1]", '"x"', '{"a": NaN}', '{"a": 1e999}', '{"a": "\\u0000"}',
                                 '{"a": "\\ud800"}', "[" * 2000 + "]" * 2000])
def test_where_that_jsonb_cannot_hold_is_invalid_filter(raw: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_where(raw)
    assert refused.value.code == "invalid_filter" and refused.value.errors[0].path == "where"


# ── properties ──────────────────────────────────────────────────────────────────────────

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=12)
objects = st.dictionaries(st.text(max_size=4), json_values, max_size=4)


@given(body=objects, patches=st.lists(objects, max_size=4))
def test_patching_then_reading_is_applying_the_patches(body: dict[str, Any], patches: list[dict[str, Any]]) -> None:
    state = given_events(DocumentCreated("notes", "n-1", merge_patch({}, body), {}, "alice"))
    expected = merge_patch({}, body)
    for patch in patches:
        result, state = run(state, PatchDocument(patch))
        assert not isinstance(result, Rejection)
        expected = merge_patch(expected, patch)
        assert state is not None and state.body == expected


@given(body=objects, patch=objects)
def test_repeating_a_patch_after_its_effect_appends_nothing(body: dict[str, Any], patch: dict[str, Any]) -> None:
    state = given_events(DocumentCreated("notes", "n-1", merge_patch({}, body), {}, "alice"))
    _, after = run(state, PatchDocument(patch))
    assert run(after, PatchDocument(patch))[0] == []


@given(patches=st.lists(st.sampled_from([{"status": "approved"}, {"status": "rejected"}, {"status": "awaiting_review"},
                                         {"notes": "n"}, {"status": None}, {"reviewer": 1}]), max_size=6))
def test_a_review_never_leaves_its_rules(patches: list[dict[str, Any]]) -> None:
    state = given_events(REVIEW)
    decided = 0
    for patch in patches:
        result, state = run(state, PatchDocument(patch), ident="reviews.r-1")
        assert state is not None and COLLECTION_RULES["reviews"].body(state.body) is None
        decided += not isinstance(result, Rejection) and bool(result) and "status" in patch
    assert decided <= 1  # the status changes at most once
