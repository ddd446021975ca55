"""The projector's named SQL statements: every name the code asks for is a shipped file, and every file is used."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from blackboard.projector import tables
from blackboard.projector.statements import statement

_ASKED = re.compile(r"""statement\(\s*["']([a-z0-9_]+)["']\s*\)""")


def _asked_for() -> set[str]:
    room = resources.files("blackboard.projector")
    names = set()
    for entry in room.iterdir():
        if entry.name.endswith(".py"):
            names.update(_ASKED.findall(entry.read_text("utf-8")))
    names.update(t.write for t in _column_tables())
    return names


def _column_tables() -> list[tables.ColumnTable]:
    return [v for v in vars(tables).values() if isinstance(v, tables.ColumnTable)]


def _shipped() -> set[str]:
    folder = resources.files("blackboard.projector").joinpath("sql")
    return {e.name.removesuffix(".sql") for e in folder.iterdir() if e.name.endswith(".sql")}


def test_every_statement_the_projector_names_is_shipped_and_every_shipped_one_is_named() -> None:
    asked = _asked_for()
    assert asked, "no statement found: the pattern no longer matches the code"
    assert asked == _shipped()


@pytest.mark.parametrize("name", sorted(_shipped()))
def test_a_statement_is_one_statement_ending_in_sql_not_a_comment(name: str) -> None:
    text = statement(name)
    last_line = text.splitlines()[-1]
    # A clause (``RETURNING …``) may be appended: the text must not end in a comment or a semicolon.
    assert not last_line.lstrip().startswith("--") and not text.endswith(";")
    assert any(not line.lstrip().startswith("--") for line in text.splitlines())
