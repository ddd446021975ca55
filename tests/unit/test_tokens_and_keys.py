"""Consistency tokens and the API-key table: pure parsing, exact errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.schemas.auth import Principal, parse_api_keys
from blackboard.schemas.envelope import decode_token, encode_token, stream_partition_key


@given(st.dictionaries(st.integers(0, 4095), st.integers(0, 2**62), min_size=1))
def test_token_round_trip(positions: dict[int, int]) -> None:
    assert decode_token(encode_token(positions)) == positions


def test_token_keeps_the_highest_offset_per_partition() -> None:
    assert decode_token("1:5,1:9,2:0") == {1: 9, 2: 0}


@pytest.mark.parametrize("bad", ["", "x", "1:", ":1", "1:-1", "a:1", "1;2", "1:2,", "1:" + "9" * 20])
def test_bad_tokens_are_refused_naming_the_part(bad: str) -> None:
    with pytest.raises(ValueError, match="consistency token"):
        decode_token(bad)


def test_stream_partition_key() -> None:
    assert stream_partition_key("project:p-1") == "p-1"
    for bad in ("project", "project:", ":p-1"):
        with pytest.raises(ValueError, match="<category>:<id>"):
            stream_partition_key(bad)


def test_api_keys() -> None:
    table = parse_api_keys("k1=alice:rw, k2=bob:ro")
    assert table == {"k1": Principal("alice", True), "k2": Principal("bob", False)}


@pytest.mark.parametrize("bad", ["k1", "k1=alice", "k1=alice:admin", "=alice:rw", "k1=:rw"])
def test_bad_api_key_entries_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="entry #1"):
        parse_api_keys(bad)
