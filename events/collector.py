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
#: Whether a server froze what it holds once started (``freeze_long_lived``).
_long_lived_frozen = False


def freeze_long_lived() -> None:
    """Once a server has started: collect, then freeze everything alive out of the collector's way.

    Note: what a started server holds (its modules, classes, settings, pools, routes) lives as long as the
    process, yet every full collection walks it again; measured in the HTTP process under a read load, a full
    collection took ≈ 84 ms with it and ≈ 1.4 ms without (a pause of every request in flight). Frozen objects
    are never collected: an object alive now that later becomes part of a garbage cycle stays, which is why
    this is done once, after start, when what is alive is what the server keeps.
    """
    global _long_lived_frozen
    gc.collect()
    gc.freeze()
    _long_lived_frozen = True


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
            if _long_lived_frozen:  # what the server froze at start is frozen again, after a full collection
                gc.collect()
                gc.freeze()
