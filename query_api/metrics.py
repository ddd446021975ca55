"""Prometheus metrics of the read side."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CACHE = Counter("blackboard_cache_reads_total", "Document reads by cache result (hit, miss, error, bypass)",
                ["result"])
#: The series of the most frequent result, looked up once (a ``labels`` lookup takes a lock and builds a key).
CACHE_HITS = CACHE.labels("hit")
CONSISTENCY_WAIT = Histogram("blackboard_consistency_wait_seconds",
                             "Time reads waited for their consistency token",
                             buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0))
CONSISTENCY_TIMEOUTS = Counter("blackboard_consistency_timeouts_total",
                               "Reads answered 503 consistency_timeout: the read models missed their token in time")
