"""The projector's SQL: one named statement per file of ``projector/sql``, shipped as package data."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def statement(name: str) -> str:
    """The statement of ``sql/<name>.sql``, without the trailing whitespace (so a clause can follow it)."""
    text = resources.files("blackboard.projector").joinpath("sql").joinpath(f"{name}.sql").read_text("utf-8")
    return text.strip()
