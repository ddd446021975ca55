"""Principals and their scopes, the API-key table they come from, and how a request presents its credential.

A principal holds scopes: ``blackboard:read``, ``blackboard:write`` (every command category),
``blackboard:write:<category>`` (the commands whose type starts with ``<category>.``) and ``blackboard:admin``
(the operator's and the process managers' commands). An API key's mode names a set of them (``MODE_SCOPES``); a
JWT carries them in its ``scope`` claim.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

READ = "blackboard:read"
WRITE = "blackboard:write"
ADMIN = "blackboard:admin"
#: The tenant of a key configured without one, of events written before tenants, and of the anonymous caller.
DEFAULT_TENANT = "default"
#: What a tenant name may be: it becomes part of cache keys, limiter keys and log fields.
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")

MODE_SCOPES: dict[str, frozenset[str]] = {
    "ro": frozenset({READ}),
    "rw": frozenset({READ, WRITE}),
    "sys": frozenset({READ, WRITE, ADMIN}),
}

#: A route handler's ``opt`` flag: it checks its write scopes itself, so it does not need ``blackboard:read``.
WRITES = "writes"

#: Commands an operator sends by hand, beside the process managers' (``SYSTEM_COMMANDS``): they need ``admin``.
OPERATOR_COMMANDS: frozenset[str] = frozenset({"task.override_status"})


def write_scope(category: str) -> str:
    """The scope that lets a principal send the commands of one category (``project``, ``task``, …)."""
    return f"{WRITE}:{category}"


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller. Its ``name`` becomes the ``actor`` of every event it causes, its ``tenant``
    the tenant of those events."""

    name: str
    scopes: frozenset[str]
    tenant: str = DEFAULT_TENANT

    @property
    def can_read(self) -> bool:
        return READ in self.scopes or ADMIN in self.scopes

    @property
    def can_write(self) -> bool:
        """Whether it may send some command (of every category, or of one)."""
        return any(s == WRITE or s.startswith(WRITE + ":") for s in self.scopes) or ADMIN in self.scopes

    def may_write(self, category: str) -> bool:
        return bool({WRITE, write_scope(category), ADMIN} & self.scopes)

    def missing_for_command(self, command_type: str, *, admin_only: bool) -> str | None:
        """The scope this principal lacks to send ``command_type`` (``admin_only``: an operator's or a process
        manager's command), or ``None`` when it may."""
        if admin_only or command_type in OPERATOR_COMMANDS:
            return None if ADMIN in self.scopes else ADMIN
        category = command_type.partition(".")[0]
        return None if self.may_write(category) else write_scope(category)


#: Without any credential configured everyone is trusted, with every right (and the server binds loopback only).
ANONYMOUS = Principal("anonymous", MODE_SCOPES["sys"])


def key_digest(key: str) -> str:
    """The SHA-256 of a key, in hex: what the key table holds and a presented key is compared by.

    Note: API keys are long random strings, so a fast hash is enough (nothing to brute-force), and it keeps the
    check cheap on every request; a slow password hash would buy nothing here.
    """
    return hashlib.sha256(key.encode()).hexdigest()


_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def parse_api_keys(spec: str) -> dict[str, Principal]:
    """Parse ``"key=principal:rw,sha256:<hex>=other:ro:tenant-a,…"`` into a key digest → principal table.

    A key is given as ``sha256:<hex digest>`` (what a configuration should hold) or, for tests and trials, as
    the key itself. ``ro`` reads, ``rw`` reads and writes, ``sys`` also sends the operator's and the process
    managers' commands; the optional last part is the principal's tenant. Two keys of one principal are both
    valid (rotation: add the new key, move the callers, then drop the old one).

    Raises ``ValueError`` naming the entry that is not of that form (never the key).
    """
    table: dict[str, Principal] = {}
    for n, entry in enumerate(filter(None, (e.strip() for e in spec.split(","))), start=1):
        key, eq, rest = entry.rpartition("=") if entry.startswith("sha256:") else entry.partition("=")
        name, _, after = rest.partition(":")
        mode, _, tenant = after.partition(":")
        tenant = tenant or DEFAULT_TENANT
        if not eq or not key or not name or mode not in MODE_SCOPES or not TENANT_PATTERN.match(tenant):
            raise ValueError(f"API key entry #{n} is not of the form 'key=principal:rw|ro|sys[:tenant]'")
        if key.startswith("sha256:") and not _DIGEST.match(key):
            raise ValueError(f"API key entry #{n}: a 'sha256:' key is 64 lower-case hex digits")
        digest = key.removeprefix("sha256:") if _DIGEST.match(key) else key_digest(key)
        table[digest] = Principal(name, MODE_SCOPES[mode], tenant)
    return table


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <key or token>`` value, else of an ``X-API-Key`` one (HTTP
    headers or gRPC metadata); ``None`` when neither presents one."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return api_key
