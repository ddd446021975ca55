"""JSON Merge Patch (RFC 7396): the examples of the RFC and the properties deciders rely on."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blackboard.schemas.merge_patch import merge_patch

SCALARS = st.none() | st.booleans() | st.integers(-10, 10) | st.text(max_size=3)
KEYS = st.sampled_from(["a", "b", "c", ""])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=12)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=4)


# RFC 7396, Appendix A.
@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_the_examples_of_the_rfc(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


@settings(max_examples=200, deadline=None)
@given(OBJECTS)
def test_patching_with_an_empty_object_is_the_identity(target: dict[str, Any]) -> None:
    assert merge_patch(target, {}) == target


@settings(max_examples=200, deadline=None)
@given(VALUES, VALUES)
def test_the_same_patch_twice_is_the_patch_once(target: Any, patch: Any) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@settings(max_examples=200, deadline=None)
@given(OBJECTS, KEYS, OBJECTS)
def test_null_removes_the_key_and_leaves_the_others(target: dict[str, Any], key: str, rest: dict[str, Any]) -> None:
    patch = {**{k: v for k, v in rest.items() if k != key}, key: None}
    result = merge_patch(target, patch)
    assert key not in result
    assert all(result[k] == v for k, v in target.items() if k not in patch)


@settings(max_examples=200, deadline=None)
@given(VALUES, VALUES)
def test_neither_argument_is_modified(target: Any, patch: Any) -> None:
    target_before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    merge_patch(target, patch)
    assert (target, patch) == (target_before, patch_before)
