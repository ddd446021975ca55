"""The memory suite counts every process of the server's tree, children included, each by its resident memory."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.memory import process_tree, tree_rss


def test_the_tree_holds_a_child_and_the_resident_memory_of_each() -> None:
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as child:
        try:
            assert child.pid in process_tree(os.getpid())
            resident = tree_rss(os.getpid())
            assert resident[os.getpid()] > 1_000_000 and resident[child.pid] > 0
        finally:
            child.kill()
    assert child.pid not in process_tree(os.getpid())
