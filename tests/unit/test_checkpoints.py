"""The checkpoint decider and the stored form of a checkpoint: examples and properties."""

from __future__ import annotations

import hashlib
import os
import zlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.domain import checkpoint
from blackboard.domain.decider import Context, Decider, Rejection, fold
from blackboard.schemas.checkpoint import (
    CheckpointCorrupt,
    CheckpointSaved,
    RestoreCheckpoint,
    SaveCheckpoint,
    decode,
    encode,
)
from blackboard.schemas.registry import decode_event, encode_payload

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHECKPOINT: Decider[Any, Any, Any] = Decider(checkpoint.initial_state, checkpoint.decide, checkpoint.evolve)


def ctx() -> Context:
    return Context(T0, "agent")


def inline_save(raw: bytes, **extra: Any) -> SaveCheckpoint:
    enc = encode(raw)
    return SaveCheckpoint(enc.sha256, enc.size, enc.encoding, len(enc.data), inline=enc.data, **extra)


def blob_save(raw: bytes) -> SaveCheckpoint:
    enc = encode(raw)
    return SaveCheckpoint(enc.sha256, enc.size, enc.encoding, len(enc.data), blob=True)


def run(state: Any, *commands: Any) -> tuple[Any, list[Any]]:
    """Decide and fold each command in turn; every one must be accepted."""
    events: list[Any] = []
    for command in commands:
        result = checkpoint.decide(state, command, ctx())
        assert not isinstance(result, Rejection), result
        state = fold(CHECKPOINT, state, result)
        events += result
    return state, events


# ── the stored form ─────────────────────────────────────────────────────────────────────


def test_compressible_bytes_are_stored_as_zlib_and_decode_back() -> None:
    raw = b"checkpoint " * 10_000
    enc = encode(raw)
    assert enc.encoding == "zlib" and len(enc.data) < len(raw) // 10
    assert decode(enc.data, enc.encoding, enc.size, enc.sha256) == raw


def test_incompressible_bytes_are_stored_as_they_are() -> None:
    raw = os.urandom(4096)
    enc = encode(raw)
    assert (enc.encoding, enc.data, enc.sha256) == ("identity", raw, hashlib.sha256(raw).hexdigest())


@pytest.mark.parametrize("damage", ["flip", "truncate", "trailing", "size"])
def test_damaged_stored_bytes_are_refused(damage: str) -> None:
    raw = b"abc" * 1000
    enc = encode(raw)
    data, size = enc.data, enc.size
    if damage == "flip":
        data = data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]
    elif damage == "truncate":
        data = data[:-3]
    elif damage == "trailing":
        data = data + b"x"
    else:
        size -= 1
    with pytest.raises(CheckpointCorrupt):
        decode(data, enc.encoding, size, enc.sha256)


def test_a_zlib_bomb_inflates_no_further_than_the_declared_size() -> None:
    bomb = zlib.compress(b"\0" * 50_000_000)
    with pytest.raises(CheckpointCorrupt, match="does not end"):
        decode(bomb, "zlib", 10, hashlib.sha256(b"").hexdigest())


# ── the decider ─────────────────────────────────────────────────────────────────────────


def test_saves_are_numbered_from_one_and_the_state_keeps_no_bytes() -> None:
    state, events = run(checkpoint.initial_state, inline_save(b"one"), blob_save(b"two" * 100_000))
    assert [e.seq for e in events] == [1, 2]
    assert events[0].inline is not None and events[1].blob and events[1].inline is None
    assert [r.inline_from for r in state.refs] == [1, None]
    assert b"one" not in msgspec.json.encode(state) and b"b25l" not in msgspec.json.encode(state)


def test_restore_appends_a_copy_that_points_at_the_bytes_of_the_original() -> None:
    state, _ = run(checkpoint.initial_state, inline_save(b"one"), inline_save(b"two"))
    _, events = run(state, RestoreCheckpoint(1, label="back"))
    assert events == [CheckpointSaved(3, state.refs[0].sha256, 3, state.refs[0].encoding, state.refs[0].stored_size,
                                      inline_from=1, label="back", parent_seq=1, restored_from=1)]


def test_restore_of_a_restore_still_points_at_the_original_bytes() -> None:
    state, _ = run(checkpoint.initial_state, inline_save(b"one"), inline_save(b"two"), RestoreCheckpoint(1))
    state, events = run(state, RestoreCheckpoint(3))
    assert events[0].inline_from == 1 and state.refs[-1].inline_from == 1


def test_restore_on_a_thread_without_checkpoints_is_not_found() -> None:
    result = checkpoint.decide(checkpoint.initial_state, RestoreCheckpoint(1), ctx())
    assert isinstance(result, Rejection) and result.code == "not_found"


def test_restore_of_an_unknown_seq_is_refused() -> None:
    state, _ = run(checkpoint.initial_state, inline_save(b"one"))
    result = checkpoint.decide(state, RestoreCheckpoint(2), ctx())
    assert isinstance(result, Rejection) and result.code == "unknown_checkpoint"
    assert result.details == {"seq": 2, "latest_seq": 1}


def test_a_parent_that_does_not_exist_is_refused() -> None:
    result = checkpoint.decide(checkpoint.initial_state, inline_save(b"x", parent_seq=1), ctx())
    assert isinstance(result, Rejection) and result.code == "unknown_checkpoint"


@pytest.mark.parametrize("command", [
    SaveCheckpoint("0" * 64, 1, "identity", 1),  # neither inline nor blob
    SaveCheckpoint("0" * 64, 1, "identity", 1, inline=b"x", blob=True),  # both
])
def test_exactly_one_of_inline_and_blob(command: SaveCheckpoint) -> None:
    result = checkpoint.decide(checkpoint.initial_state, command, ctx())
    assert isinstance(result, Rejection) and result.code == "invalid_checkpoint"


@pytest.mark.parametrize("change", [{"sha256": "0" * 64}, {"size": 2}, {"stored_size": 9}])
def test_inline_bytes_that_do_not_match_are_refused(change: dict[str, Any]) -> None:
    command = msgspec.structs.replace(inline_save(b"abc"), **change)
    result = checkpoint.decide(checkpoint.initial_state, command, ctx())
    assert isinstance(result, Rejection) and result.code == "checkpoint_mismatch"


def test_metadata_over_64_kib_is_refused() -> None:
    result = checkpoint.decide(checkpoint.initial_state, inline_save(b"x", metadata={"a": "x" * 70_000}), ctx())
    assert isinstance(result, Rejection) and result.code == "metadata_too_large"


def test_the_event_round_trips_through_the_registry() -> None:
    _, events = run(checkpoint.initial_state, inline_save(os.urandom(100), label="l", metadata={"step": 1}))
    assert decode_event("checkpoint.saved", 1, encode_payload(events[0])) == events[0]


def test_the_wire_form_of_a_save_command_is_base64() -> None:
    command = inline_save(b"abc")
    wire = msgspec.json.encode(command)
    assert msgspec.json.decode(wire, type=SaveCheckpoint) == command


def test_the_state_round_trips_through_json_as_the_read_model_stores_it() -> None:
    state, _ = run(checkpoint.initial_state, inline_save(b"one"), blob_save(b"two"), RestoreCheckpoint(1))
    stored = msgspec.json.decode(msgspec.json.encode(state))
    assert msgspec.convert(stored, checkpoint.Thread, strict=False) == state


ops = st.lists(st.one_of(
    st.binary(max_size=64).map(lambda b: ("save", b)),
    st.integers(min_value=1, max_value=12).map(lambda s: ("restore", s)),
), max_size=12)


@given(ops)
def test_seqs_are_dense_and_every_ref_points_at_bytes(steps: list[tuple[str, Any]]) -> None:
    state = checkpoint.initial_state
    for kind, arg in steps:
        command = inline_save(arg) if kind == "save" else RestoreCheckpoint(arg)
        result = checkpoint.decide(state, command, ctx())
        if isinstance(result, Rejection):
            assert kind == "restore" and arg > len(state.refs)
            continue
        assert [e.seq for e in result] == [len(state.refs) + 1]
        state = fold(CHECKPOINT, state, result)
    for ref in state.refs:
        assert ref.inline_from is not None and state.refs[ref.inline_from - 1].sha256 == ref.sha256
