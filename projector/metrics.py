"""Prometheus metrics of the projector."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZE = Histogram("blackboard_projector_batch_size", "Records per projector transaction",
                       buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000))
BATCH_SECONDS = Histogram("blackboard_projector_batch_seconds", "Time of one projector transaction",
                          buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
APPLIED = Counter("blackboard_projector_events_total", "Records handled by the projector, by result",
                  ["result"])
LAG = Gauge("blackboard_projector_lag", "Records in the log not yet applied, per partition", ["partition"])
CACHE_FAILURES = Counter("blackboard_cache_write_failures_total", "Write-throughs to Redis that failed")
