"""The live projector's choice between reading ahead (behind the log) and reading after a batch (caught up)."""

from __future__ import annotations

from blackboard.events.log import StoredRecord
from blackboard.projector.fold import Passed
from blackboard.projector.runtime import _behind


def _items(partitions: list[int]) -> list[Passed]:
    return [Passed(StoredRecord("t", p, n, None, None, (), 0), "marker") for n, p in enumerate(partitions)]


def test_a_batch_that_filled_a_partitions_share_is_behind() -> None:
    assert _behind(_items([0, 1, 1, 1]), share=3)


def test_a_batch_below_every_partitions_share_is_caught_up() -> None:
    assert not _behind(_items([0, 1, 2, 0, 1, 2]), share=3)
    assert not _behind([], share=1)
