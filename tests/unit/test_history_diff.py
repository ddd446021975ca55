"""The changes between two states: leaf paths as JSON Pointers, and applying them gives the new state."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from blackboard.schemas.changes import apply_changes, diff, escape, same, under, unescape
from blackboard.schemas.views import FieldChange

KEYS = st.sampled_from(["a", "b", "status", "x/y", "t~1", ""])
SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=3)
VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=5)


def test_a_changed_leaf_is_named_by_its_path_with_both_values() -> None:
    before = {"title": "A", "shots": {"s-1": {"fields": {"status": "draft"}, "version": 1}}}
    after = {"title": "A", "shots": {"s-1": {"fields": {"status": "review"}, "version": 2}}}

    assert diff(before, after) == [
        FieldChange("/shots/s-1/fields/status", "replace", "draft", "review"),
        FieldChange("/shots/s-1/version", "replace", 1, 2),
    ]


def test_a_new_object_is_listed_leaf_by_leaf_and_a_removed_one_at_its_key() -> None:
    assert diff({}, {"shots": {"s-1": {"fields": {}, "version": 1}}}) == [
        FieldChange("/shots/s-1/fields", "add", None, {}),
        FieldChange("/shots/s-1/version", "add", None, 1),
    ]
    assert diff({"s": {"a": 1}}, {}) == [FieldChange("/s", "remove", {"a": 1}, None)]


def test_a_null_value_is_not_an_absent_one() -> None:
    assert diff({"a": None}, {}) == [FieldChange("/a", "remove", None, None)]
    assert diff({}, {"a": None}) == [FieldChange("/a", "add", None, None)]


def test_lists_are_whole_values_and_types_count() -> None:
    assert diff({"l": [1, 2]}, {"l": [1, 3]}) == [FieldChange("/l", "replace", [1, 2], [1, 3])]
    assert diff({"a": 1}, {"a": True}) == [FieldChange("/a", "replace", 1, True)]
    assert diff({"a": 1}, {"a": 1.0}) == [FieldChange("/a", "replace", 1, 1.0)]
    assert diff({"a": [1]}, {"a": [1]}) == []


def test_keys_with_slash_and_tilde_are_escaped() -> None:
    assert [c.path for c in diff({}, {"x/y": {"t~1": 1}})] == ["/x~1y/t~01"]
    assert unescape(escape("a/~b~1")) == "a/~b~1"


def test_changes_under_a_subtree_stop_at_its_boundary() -> None:
    changes = diff({}, {"shots": {"s-1": {"v": 1}, "s-10": {"v": 1}}})
    assert [c.path for c in under(changes, "/shots/s-1")] == ["/shots/s-1/v"]


@given(OBJECTS, OBJECTS)
def test_applying_the_changes_to_before_gives_after(before: dict[str, Any], after: dict[str, Any]) -> None:
    changes = diff(before, after)

    assert same(apply_changes(before, changes), after)


@given(VALUES, VALUES)
def test_any_two_values_diff_and_apply(before: Any, after: Any) -> None:
    assert same(apply_changes(before, diff(before, after)), after)


@given(OBJECTS)
def test_a_value_has_no_changes_from_itself_and_paths_are_unique(value: dict[str, Any]) -> None:
    assert diff(value, value) == []
    other = {"extra": value}
    paths = [c.path for c in diff(value, other)]
    assert len(paths) == len(set(paths))
