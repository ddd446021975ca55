"""Principals, the API-key table they come from, and how a request presents its key."""

from __future__ import annotations

import msgspec


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller. Its ``name`` becomes the ``actor`` of every event it causes."""

    name: str
    can_write: bool
    #: May send the commands of the process managers (``clock.tick``, ``task.expire_claim``, …).
    system: bool = False


#: Without API keys everyone is trusted, with every right.
ANONYMOUS = Principal("anonymous", can_write=True, system=True)


def parse_api_keys(spec: str) -> dict[str, Principal]:
    """Parse ``"key=principal:rw,key2=other:ro,key3=pm:sys"`` into a key → principal table.

    ``sys`` is ``rw`` plus the commands only the process managers send.

    Raises ``ValueError`` naming the entry that is not of that form.
    """
    table: dict[str, Principal] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        key, eq, rest = entry.partition("=")
        name, colon, mode = rest.partition(":")
        if not eq or not colon or not key or not name or mode not in ("rw", "ro", "sys"):
            raise ValueError(f"API key entry #{len(table) + 1} is not of the form 'key=principal:rw|ro|sys'")
        table[key] = Principal(name, can_write=mode != "ro", system=mode == "sys")
    return table


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` value, else of an ``X-API-Key`` one (HTTP headers or
    gRPC metadata); ``None`` when neither presents one."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return api_key

