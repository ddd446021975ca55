"""Principals and the API-key table they come from."""

from __future__ import annotations

import msgspec


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller. Its ``name`` becomes the ``actor`` of every event it causes."""

    name: str
    can_write: bool


ANONYMOUS = Principal("anonymous", can_write=True)


def parse_api_keys(spec: str) -> dict[str, Principal]:
    """Parse ``"key=principal:rw,key2=other:ro"`` into a key → principal table.

    Raises ``ValueError`` naming the entry that is not of that form.
    """
    table: dict[str, Principal] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        key, eq, rest = entry.partition("=")
        name, colon, mode = rest.partition(":")
        if not eq or not colon or not key or not name or mode not in ("rw", "ro"):
            raise ValueError(f"API key entry #{len(table) + 1} is not of the form 'key=principal:rw|ro'")
        table[key] = Principal(name, can_write=mode == "rw")
    return table
