"""A served process freezes what it holds once started; a bulk fold's collector settings keep that freeze."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from blackboard.events import collector
from blackboard.events.collector import bulk_gc, freeze_long_lived


class Node:
    """A container the collector tracks, able to be part of a cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def thawed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(collector, "_long_lived_frozen", False)
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_what_is_alive_at_start_is_frozen_and_later_garbage_is_still_collected(thawed: None) -> None:
    kept = Node()
    freeze_long_lived()
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # out of the collector's way
    later = _cycle()
    gc.collect()
    assert later() is None


def test_a_bulk_fold_gives_the_freeze_back_and_frees_its_own_garbage(thawed: None) -> None:
    freeze_long_lived()
    with bulk_gc():
        made_inside = _cycle()
    assert gc.get_freeze_count() > 0  # frozen again once the fold ends
    assert made_inside() is None  # the fold's cycles were collected before the freeze, not frozen with it
