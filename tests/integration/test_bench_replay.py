"""``blackboard bench --suite replay`` with tiny sizes: every figure measured, the catch-up shared by two workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_replay_bench_measures_the_rebuild_beside_the_machines_limits(tmp_path: Path) -> None:
    blackboard = Path(sys.executable).with_name("blackboard")
    done = subprocess.run(
        [str(blackboard), "bench", "--suite", "replay", "--events", "3000", "--runs", "1", "--batch-size", "200",
         "--workers", "2"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"catch-up\s+in\s+2\s+processes", out), out
    figures = {}
    for label in ("log read", "COPY into change_log with all its indexes", "COPY into change_log as a rebuild",
                  "replay end to end"):
        found = re.search(re.escape(label) + r"[^│]*│\s*([\d,]+)\s*│", out)
        assert found is not None, (label, out)
        figures[label] = int(found.group(1).replace(",", ""))
    assert all(value > 0 for value in figures.values()), figures
