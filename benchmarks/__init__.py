"""Benchmarks of Blackboard, measured for real on this machine; part of the source checkout, not of the package.

Run them with ``python -m benchmarks --suite NAME`` from the checkout's top folder, or with
``blackboard bench --suite NAME`` when the checkout is present (see ``benchmarks.suites``).
"""
