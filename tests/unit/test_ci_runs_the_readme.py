"""CI proves what a newcomer runs: ``.ci/run`` runs the README's test command, word for word."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_the_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    run, test = readme_commands()[:2]
    assert run.endswith("blackboard up") and test.endswith("pytest")
    assert "-c constraints.txt" in run and "-c constraints.txt" in test, "both install from the lock"
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines
