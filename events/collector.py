"""The garbage collector held off while a process folds a log in bulk (a rebuild's catch-up, an owner's restore).

A batch of 10,000 records makes hundreds of thousands of container objects (headers, envelopes,
rows, outcomes) that live until the batch is folded, so the default thresholds start a collection
every 700 of them, each walking the young objects and, now and then, everything the fold has built
so far: measured, a quarter of a rebuild's time and of a restore's from the log.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: The collector's thresholds while folding in bulk (see ``bulk_gc``).
BULK_GC_THRESHOLDS = (200_000, 20, 1_000)

_holders = 0
_saved: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def bulk_gc() -> Iterator[None]:
    """Collect garbage rarely inside, and restore the collector's settings once the last holder leaves.

    Note: what is made before the first holder entered is frozen out of the collector's way. Holders
    may overlap (the owners of several partitions restore at once on one event loop): the settings
    are taken when the first enters and given back when the last leaves, whatever the order.
    """
    global _holders, _saved
    if _holders == 0:
        _saved = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(*BULK_GC_THRESHOLDS)
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0:
            gc.set_threshold(*_saved)
            gc.unfreeze()
