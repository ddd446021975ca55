"""``blackboard bench`` finds the benchmarks of a source checkout, and says how to get one when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from blackboard.cli import bench


def test_the_suites_are_found_in_the_checkout_the_cli_runs_from() -> None:
    suites = bench._suites()
    assert suites.__name__ == "benchmarks.suites" and callable(suites.run_suite)


def test_without_a_checkout_it_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    installed = tmp_path / "site-packages" / "blackboard" / "cli" / "bench.py"
    monkeypatch.setattr(bench, "__file__", str(installed))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        bench._suites()
    assert exited.value.code == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "not part of the installed package" in said and "python -m benchmarks" in said
