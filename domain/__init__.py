"""The pure core: each aggregate's ``initial_state``, ``decide`` and ``evolve``; the registry; the fold; the
one front every request body goes through (``decoding``)."""
