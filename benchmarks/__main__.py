"""``python -m benchmarks``: the same options, help and output as ``blackboard bench``."""

from __future__ import annotations

import logging

import cyclopts

from blackboard.cli.bench import bench
from blackboard.logs import configure_logging

app = cyclopts.App(name="python -m benchmarks", help=bench.__doc__)
app.default(bench)

if __name__ == "__main__":
    configure_logging(logging.WARNING)
    app()
