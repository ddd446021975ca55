"""The idempotency memory's bookkeeping: every write counted, the oldest forgotten first, never the newest 256."""

from __future__ import annotations

from blackboard.command_api.known import KEEP_AT_LEAST, BoundedIndex, Known, KnownMemory, entry_bytes
from blackboard.schemas.api import Rejected


def known(i: int, reason: str = "r") -> Known:
    return Known(f"fp-{i}", Rejected(f"c-{i}", "budget_exceeded", reason, {}))


def test_every_write_is_counted_and_the_oldest_goes_first() -> None:
    memory = KnownMemory(0, max_count=KEEP_AT_LEAST + 2, max_bytes=1 << 30)
    for i in range(KEEP_AT_LEAST + 5):
        memory[f"c-{i}"] = known(i)
    assert list(memory)[:2] == ["c-3", "c-4"] and memory.evicted == 3
    memory.setdefault("c-4", known(99, "ignored"))
    memory.update({"c-10": known(10, "a longer reason than before")})
    assert memory["c-4"].outcome == known(4).outcome and list(memory)[:2] == ["c-3", "c-4"]
    del memory["c-3"]
    assert memory.pop("c-4") == known(4) and memory.pop("absent", None) is None
    assert memory.bytes == sum(entry_bytes(cid, k) for cid, k in memory.items())
    memory.clear()
    assert (len(memory), memory.bytes, memory.evicted) == (0, 0, 3)


def test_the_byte_bound_keeps_the_newest_whatever_their_size() -> None:
    memory = KnownMemory(0, max_count=10_000, max_bytes=1)
    memory.update((f"c-{i}", known(i)) for i in range(KEEP_AT_LEAST + 10))
    assert len(memory) == KEEP_AT_LEAST and next(iter(memory)) == "c-10"
    assert memory.state() == {"commands": KEEP_AT_LEAST, "bytes": memory.bytes, "evicted": 10,
                              "max_commands": 10_000, "max_bytes": 1}


def test_the_cross_partition_index_is_bounded() -> None:
    index = BoundedIndex(3)
    for i in range(5):
        assert index.setdefault(f"c-{i}", i % 2) == i % 2
    assert index == {"c-2": 0, "c-3": 1, "c-4": 0}


def test_a_command_deleted_and_learnt_again_is_forgotten_in_its_new_place() -> None:
    memory = KnownMemory(0, max_count=KEEP_AT_LEAST + 1, max_bytes=1 << 30)
    for i in range(KEEP_AT_LEAST + 1):
        memory[f"c-{i}"] = known(i)
    del memory["c-0"]
    memory["c-0"] = known(0)  # now the newest
    memory["c-1"] = known(1, "replaced: keeps its place")
    memory["c-new"] = known(-1)
    memory["c-newer"] = known(-2)
    assert list(memory)[:2] == ["c-3", "c-4"] and list(memory)[-2:] == ["c-new", "c-newer"] and "c-0" in memory
    assert len(memory) == KEEP_AT_LEAST + 1 and memory.evicted == 2  # c-1 and c-2, not c-0


def test_the_index_forgets_in_the_order_it_learnt_after_deletes() -> None:
    index = BoundedIndex(3)
    index.update({"a": 0, "b": 1, "c": 0})
    assert index.pop("a") == 0
    index["a"] = 1
    index["d"] = 0  # forgets b, the oldest left; a is now newer than c
    assert list(index) == ["c", "a", "d"]
    index["e"] = 1
    assert list(index) == ["a", "d", "e"]
