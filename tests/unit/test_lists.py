"""The list machinery without a database: parsing, cursors, SQL building, field selection."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.query_api import lists
from blackboard.query_api.lists import SHOTS, TASKS
from blackboard.schemas.errors import InvalidRequest


def _code(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        call(*args, **kwargs)
    return caught.value.code, caught.value.errors[0].path


# ── sort ────────────────────────────────────────────────────────────────────────────────


def test_default_sort_is_oldest_first_with_id_tiebreak() -> None:
    assert lists.sort_text(lists.parse_sort(TASKS, None)) == "created_at,id"
    assert lists.sort_text(lists.parse_sort(SHOTS, None)) == "id"


def test_tiebreak_follows_the_last_direction() -> None:
    assert lists.sort_text(lists.parse_sort(TASKS, "-updated_at")) == "-updated_at,-id"
    assert lists.sort_text(lists.parse_sort(TASKS, "-priority,name")) == "-priority,name,id"
    assert lists.sort_text(lists.parse_sort(TASKS, "-id,name")) == "-id,name"


@pytest.mark.parametrize("raw", ["bogus", "", "name,", "-", "name,name", "field.scene", "created_at;drop"])
def test_bad_task_sorts_are_refused(raw: str) -> None:
    assert _code(lists.parse_sort, TASKS, raw) == ("invalid_sort", "sort")


@pytest.mark.parametrize("raw", ["field.", "field.1a", "field.a-b", "field.a'b", "field." + "a" * 64])
def test_dynamic_sort_names_must_be_identifiers(raw: str) -> None:
    assert _code(lists.parse_sort, SHOTS, raw) == ("invalid_sort", "sort")


def test_dynamic_sort_passes_the_name_as_a_parameter() -> None:
    query = lists.parse_list_query(SHOTS, sort="-field.scene", scope=("p-1",))
    sql, args = lists.build_select(SHOTS, query, ("p-1",))
    assert "scene" not in sql and args[:2] == ["p-1", "scene"]
    assert "ORDER BY coalesce(fields->>$2::text, '') DESC, shot_id DESC" in sql


# ── filters ─────────────────────────────────────────────────────────────────────────────


def test_filters_are_typed() -> None:
    terms = lists.parse_filters(TASKS, {"priority_min": "3", "status": "running",
                                        "created_after": "2024-01-01T00:00:00Z"})
    values = {t.key.name: t.value for t in terms}
    assert values == {"priority_min": 3, "status": "running", "created_after": datetime(2024, 1, 1, tzinfo=UTC)}


@pytest.mark.parametrize(("params", "param"), [
    ({"priority_min": "high"}, "priority_min"),
    ({"priority_max": "1.5"}, "priority_max"),
    ({"priority_max": str(2**63)}, "priority_max"),
    ({"status": "asleep"}, "status"),
    ({"created_after": "2024-01-01T00:00:00"}, "created_after"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"colour": "red"}, "colour"),
    ({"name": "a\x00b"}, "name"),
    ({"name": "a\ud800b"}, "name"),
    ({"user": "\udfff"}, "user"),
])
def test_bad_task_filters_are_refused(params: dict[str, str], param: str) -> None:
    assert _code(lists.parse_filters, TASKS, params) == ("invalid_filter", param)


def test_shot_filters_on_any_field_by_parameter() -> None:
    query = lists.parse_list_query(SHOTS, filters={"field.lens": "50mm", "status": "ok"}, scope=("p",))
    sql, args = lists.build_select(SHOTS, query, ("p",))
    assert "lens" not in sql and "50mm" not in sql
    assert "fields->>$2::text = $3::text" in sql and args[1:4] == ["lens", "50mm", "ok"]
    assert _code(lists.parse_filters, SHOTS, {"field.x y": "1"}) == ("invalid_filter", "field.x y")


def test_filter_params_keep_only_the_resources_filters() -> None:
    given_ = {"status": "a", "field.x": "b", "sort": "id", "page_size": "3"}
    assert lists.filter_params(SHOTS, given_) == {"status": "a", "field.x": "b"}
    assert lists.filter_params(TASKS, given_) == {"status": "a"}


# ── fields ──────────────────────────────────────────────────────────────────────────────


def test_fields_of_a_closed_resource() -> None:
    assert lists.parse_fields(TASKS, "id, payload.a.b,id") == ("id", "payload.a.b")
    assert _code(lists.parse_fields, TASKS, "id,colour") == ("unknown_field", "fields")
    assert _code(lists.parse_fields, TASKS, "id,") == ("unknown_field", "fields")
    assert _code(lists.parse_fields, TASKS, "payload..a") == ("unknown_field", "fields")


def test_fields_of_an_open_resource() -> None:
    assert lists.parse_fields(SHOTS, ["lens", "spec.fps"]) == ("lens", "spec.fps")
    assert _code(lists.parse_fields, SHOTS, ["a b"]) == ("unknown_field", "fields")
    assert _code(lists.parse_fields, SHOTS, []) == ("unknown_field", "fields")


def test_select_fields_nested_and_overlapping() -> None:
    doc = {"id": "t", "payload": {"a": {"b": 1, "c": 2}, "d": 3}, "status": "x"}
    assert lists.select_fields(doc, None) == doc
    assert lists.select_fields(doc, ["payload.a.b", "id", "payload.zz", "payload.d.e"]) == {
        "id": "t", "payload": {"a": {"b": 1}}}
    assert lists.select_fields(doc, ["payload.a.b", "payload"]) == {"payload": doc["payload"]}
    assert doc["payload"] == {"a": {"b": 1, "c": 2}, "d": 3}  # never written into
    assert lists.select_fields(doc, ["lens"], strict=False) == {}
    assert _code(lists.select_fields, doc, ["lens"]) == ("unknown_field", "fields")


@given(st.dictionaries(st.sampled_from("abc"), st.integers() | st.dictionaries(st.sampled_from("xy"), st.integers())),
       st.lists(st.sampled_from(["a", "b", "c", "a.x", "b.y", "c.x.z"]), min_size=1))
def test_selected_paths_hold_the_documents_values(doc: dict[str, Any], fields: list[str]) -> None:
    picked = lists.select_fields(doc, fields, strict=False)
    for path in fields:
        found, value = lists._pick(doc, path.split("."))
        if found:
            assert lists._pick(picked, path.split(".")) == (True, value)
    assert set(picked) <= set(doc)


# ── cursors ─────────────────────────────────────────────────────────────────────────────

_STAMPS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]))
# Text the API can hold: Unicode scalar values without NUL. A lone surrogate never reaches a cursor: it is
# refused where it would enter (test_text_postgresql_cannot_hold_is_refused_in_filters_and_cursors).
_VALUE = {"text": st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"])),
          "int": st.integers(-(2**63), 2**63 - 1),
          "timestamp": _STAMPS}


@given(st.data(), st.permutations(["id", "created_at", "updated_at", "priority", "name"]), st.integers(1, 5),
       st.lists(st.booleans(), min_size=5, max_size=5))
def test_cursor_round_trip(data: st.DataObject, keys: list[str], n: int, desc: list[bool]) -> None:
    raw = ",".join(("-" if d else "") + k for k, d in zip(keys[:n], desc, strict=False))
    sort = lists.parse_sort(TASKS, raw)
    values = tuple(data.draw(_VALUE[t.key.type]) for t in sort)
    digest = lists.fingerprint(TASKS, (), ())
    cursor = lists.encode_cursor(sort, values, digest)
    assert re.fullmatch(r"[A-Za-z0-9_\-]+", cursor)
    assert lists.decode_cursor(cursor, sort, digest) == values


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "a\x00b"])
def test_text_postgresql_cannot_hold_is_refused_in_filters_and_cursors(text: str) -> None:
    sort = lists.parse_sort(TASKS, "name")
    digest = lists.fingerprint(TASKS, (), ())
    # A cursor this API never made, carrying the text as a JSON escape: refused, never a 500 and never a query.
    raw = json.dumps(["name,id", digest, [text, "t-1"]]).encode()
    forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert _code(lists.decode_cursor, forged, sort, digest) == ("invalid_cursor", "cursor")
    assert _code(lists.parse_filters, TASKS, {"name": text}) == ("invalid_filter", "name")


def test_cursor_for_another_sort_or_filter_is_refused() -> None:
    made = lists.parse_list_query(TASKS, sort="-priority", filters={"status": "pending"})
    cursor = lists.encode_cursor(made.sort, [3, "t-1"], made.fingerprint)
    assert lists.parse_list_query(TASKS, sort="-priority", filters={"status": "pending"}, cursor=cursor).after == (
        3, "t-1")
    for other in ({"sort": "priority", "filters": {"status": "pending"}},
                  {"sort": "-priority", "filters": {"status": "running"}},
                  {"sort": "-priority"}):
        assert _code(lists.parse_list_query, TASKS, cursor=cursor, **other) == ("invalid_cursor", "cursor")
    shots = lists.parse_list_query(SHOTS, scope=("p-1",))
    shot_cursor = lists.encode_cursor(shots.sort, ["s-1"], shots.fingerprint)
    assert _code(lists.parse_list_query, SHOTS, cursor=shot_cursor, scope=("p-2",)) == ("invalid_cursor", "cursor")


def test_a_cursor_with_values_of_the_wrong_type_is_refused() -> None:
    sort = lists.parse_sort(TASKS, "priority")
    digest = lists.fingerprint(TASKS, (), ())
    assert _code(lists.decode_cursor, lists.encode_cursor(sort, ["high", "t"], digest), sort, digest) == (
        "invalid_cursor", "cursor")
    assert _code(lists.decode_cursor, lists.encode_cursor(sort, [1], digest), sort, digest) == (
        "invalid_cursor", "cursor")


@given(st.text())
def test_any_garbage_cursor_is_refused_never_crashes(garbage: str) -> None:
    sort = lists.parse_sort(TASKS, None)
    with pytest.raises(InvalidRequest) as caught:
        lists.decode_cursor(garbage, sort, lists.fingerprint(TASKS, (), ()))
    assert caught.value.code == "invalid_cursor"


# ── SQL ─────────────────────────────────────────────────────────────────────────────────


def test_one_direction_uses_a_row_comparison() -> None:
    query = lists.parse_list_query(TASKS, sort="-updated_at")
    cursor = lists.encode_cursor(query.sort, [datetime(2024, 1, 1, tzinfo=UTC), "t-9"], query.fingerprint)
    query = lists.parse_list_query(TASKS, sort="-updated_at", cursor=cursor, page_size=10)
    sql, args = lists.build_select(TASKS, query)
    assert "(updated_at, id) < ($1::timestamptz, $2::text)" in sql
    assert sql.endswith("ORDER BY updated_at DESC, id DESC LIMIT $3::bigint") and args[-1] == 11


def test_mixed_directions_expand_the_keyset() -> None:
    query = lists.parse_list_query(TASKS, sort="-priority,name")
    cursor = lists.encode_cursor(query.sort, [5, "n", "t-1"], query.fingerprint)
    sql, _ = lists.build_select(TASKS, lists.parse_list_query(TASKS, sort="-priority,name", cursor=cursor))
    assert ("((priority < $1::bigint) OR (priority = $1::bigint AND name > $2::text) OR "
            "(priority = $1::bigint AND name = $2::text AND id > $3::text))") in sql


# The "zq" mark keeps a generated name from being a word of the SQL itself ("fields", "shot_id").
_NAME = st.from_regex(r"zq[A-Za-z0-9_]{4,20}", fullmatch=True)


# Text a filter accepts: no NUL and no lone surrogate (those are refused before any SQL is built).
_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]))


@given(_NAME, _NAME, _TEXT.map(lambda t: "zq" + t), st.sampled_from(["", "-"]))
def test_client_text_never_reaches_the_sql(sort_field: str, filter_field: str, value: str, sign: str) -> None:
    query = lists.parse_list_query(SHOTS, sort=f"{sign}field.{sort_field},version",
                                   filters={f"field.{filter_field}": value, "scene": value}, scope=("p",))
    sql, args = lists.build_select(SHOTS, query, ("p",))
    for text in (sort_field, filter_field, value):
        assert text not in sql
    assert max(int(n) for n in re.findall(r"\$(\d+)", sql)) == len(args)
