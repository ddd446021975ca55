"""``blackboard bench --suite deciders`` with tiny sizes on the PostgreSQL log: both paths measured, counters agree."""

from __future__ import annotations

import math

import pytest

from benchmarks.deciders import PARTITIONS, measure, parse_counts

pytestmark = pytest.mark.slow


async def test_one_and_two_deciders_measure_the_fast_and_the_routed_path(pg_url: str) -> None:
    results = await measure({"BLACKBOARD_POSTGRES_URL": pg_url}, (1, 2), clients=4, commands=120, runs=1,
                            projects=16)
    assert set(results) == {1, 2}
    for rows in results.values():
        (run,) = rows
        assert run.total.count == 120 == run.fast.count + run.routed.count
        assert run.fast.count > 0 and run.routed.count > 0, run  # random targets: both paths get traffic
        assert 0 < run.total.p50_ms <= run.total.p99_ms and not math.isnan(run.routed.p99_ms)
        assert run.counters_agree, "the processes' own counters name the same paths as the ownership read"


def test_counts_must_fit_the_partitions() -> None:
    assert parse_counts("1, 2,3") == (1, 2, 3)
    for bad in ("", "0", f"{PARTITIONS + 1}", "1,x"):
        with pytest.raises(ValueError):
            parse_counts(bad)
