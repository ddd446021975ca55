"""Consistency tokens and the API-key table: pure parsing, exact errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.schemas.auth import MODE_SCOPES, Principal, key_digest, parse_api_keys
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


def test_api_keys_are_held_by_their_digest_with_the_scopes_of_their_mode_and_a_tenant() -> None:
    hashed = "sha256:" + key_digest("k3")
    table = parse_api_keys(f"k1=alice:rw, k2=bob:ro:acme, {hashed}=pm:sys")
    assert table == {key_digest("k1"): Principal("alice", MODE_SCOPES["rw"]),
                     key_digest("k2"): Principal("bob", MODE_SCOPES["ro"], "acme"),
                     key_digest("k3"): Principal("pm", MODE_SCOPES["sys"])}
    assert "k1" not in table and not table[key_digest("k2")].can_write and table[key_digest("k3")].can_write


def test_scopes_decide_which_commands_a_principal_may_send() -> None:
    worker = Principal("w", frozenset({"blackboard:write:task"}))
    assert worker.missing_for_command("task.complete", admin_only=False) is None
    assert worker.missing_for_command("project.reserve_budget", admin_only=False) == "blackboard:write:project"
    assert worker.missing_for_command("task.override_status", admin_only=False) == "blackboard:admin"
    writer = Principal("rw", MODE_SCOPES["rw"])
    assert writer.missing_for_command("clock.tick", admin_only=True) == "blackboard:admin"
    assert Principal("s", MODE_SCOPES["sys"]).missing_for_command("clock.tick", admin_only=True) is None


@pytest.mark.parametrize("bad", ["k1", "k1=alice", "k1=alice:admin", "=alice:rw", "k1=:rw", "k1=alice:rw:bad tenant",
                                 "sha256:abc=alice:rw"])
def test_bad_api_key_entries_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="entry #1"):
        parse_api_keys(bad)
