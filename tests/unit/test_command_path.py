"""The path of one command (docs/architecture.md) stays short: files that exist, at most twelve, in at most four
rooms, each read once."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: A step of the table: ``| 3 | `command_api` | `service.py` | …``.
STEP = re.compile(r"^\| (\d+) \| `(\w+)` \| `([\w/]+\.py)` \|", re.M)


def documented_path() -> list[tuple[int, str, str]]:
    text = (ROOT / "docs" / "architecture.md").read_text("utf-8")
    section = text.split("## The path of one command", 1)[1].split("\n## ", 1)[0]
    return [(int(n), room, name) for n, room, name in STEP.findall(section)]


def test_the_path_of_one_command_opens_at_most_twelve_files_in_four_rooms_each_once() -> None:
    path = documented_path()
    assert [n for n, _, _ in path] == list(range(1, len(path) + 1)), "the steps are numbered in order"
    files = [f"{room}/{name}" for _, room, name in path]
    assert 0 < len(files) <= 12, files
    assert len({room for _, room, _ in path}) <= 4, files
    assert len(set(files)) == len(files), "a file of the path is met twice"
    assert [f for f in files if not (ROOT / f).is_file()] == [], "the path names a file that is not there"
