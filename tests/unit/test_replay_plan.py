"""How a rebuild shares partitions among worker processes, and the collector settings of a bulk load."""

from __future__ import annotations

import gc
import os

from hypothesis import given
from hypothesis import strategies as st

from blackboard.events.collector import BULK_GC_THRESHOLDS, bulk_gc
from blackboard.projector.replay_workers import PARALLEL_FROM, worker_partitions

ends = st.dictionaries(st.integers(0, 63), st.integers(0, 10**7), min_size=1, max_size=64)


@given(ends, st.integers(1, 16))
def test_every_partition_is_folded_by_exactly_one_worker(targets: dict[int, int], workers: int) -> None:
    groups = worker_partitions(targets, workers)
    assert sorted(p for g in groups for p in g) == sorted(targets)
    assert all(groups) and 1 <= len(groups) <= max(1, min(workers, sum(1 for e in targets.values() if e)))


@given(st.dictionaries(st.integers(0, 63), st.integers(1, 10**6), min_size=8, max_size=64), st.integers(2, 8))
def test_the_shares_are_even_up_to_the_largest_partition(targets: dict[int, int], workers: int) -> None:
    loads = [sum(targets[p] for p in g) for g in worker_partitions(targets, workers)]
    assert max(loads) - min(loads) <= max(targets.values())


def test_a_small_log_is_folded_in_one_process_unless_workers_are_asked_for() -> None:
    small = {p: PARALLEL_FROM // 16 for p in range(8)}
    assert worker_partitions(small, None) == [frozenset(range(8))]
    assert len(worker_partitions(small, 2)) == 2
    assert len(worker_partitions({p: PARALLEL_FROM for p in range(8)}, None)) == min(os.cpu_count() or 1, 8)


def test_the_bulk_load_collector_settings_are_undone_after() -> None:
    before = gc.get_threshold()
    with bulk_gc():
        assert gc.get_threshold() == BULK_GC_THRESHOLDS
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_overlapping_bulk_loads_give_the_collector_back_when_the_last_one_ends() -> None:
    before = gc.get_threshold()
    first, second = bulk_gc(), bulk_gc()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to enter ends first: the second still folds
    assert gc.get_threshold() == BULK_GC_THRESHOLDS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
