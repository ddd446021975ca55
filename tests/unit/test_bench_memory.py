"""The memory suite counts every process of the server's tree, children included, each by its resident memory."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.memory import tree_rss
from benchmarks.server import busiest, process_tree, thread_busy


def test_the_tree_holds_a_child_and_the_resident_memory_of_each() -> None:
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as child:
        try:
            assert child.pid in process_tree(os.getpid())
            resident = tree_rss(os.getpid())
            assert resident[os.getpid()] > 1_000_000 and resident[child.pid] > 0
        finally:
            child.kill()
    assert child.pid not in process_tree(os.getpid())


def test_the_busiest_thread_is_the_one_that_spun() -> None:
    import threading
    import time

    done = threading.Event()

    def spin() -> None:
        while not done.is_set():
            pass

    spinner = threading.Thread(target=spin)
    before, t0 = thread_busy([os.getpid()]), time.perf_counter()
    spinner.start()
    try:
        time.sleep(0.4)  # the main thread idles meanwhile
        after = thread_busy([os.getpid()])
        wall = time.perf_counter() - t0
    finally:
        done.set()
        spinner.join()
    # A thread born during the load is not compared (it has no "before"); the spinner is.
    before[(os.getpid(), spinner.native_id or 0)] = (0.0, 0.0)
    on_cpu, waiting = busiest(before, after, wall)
    assert on_cpu + waiting > 0.6  # running or runnable nearly all the time; the idle main thread is far below
