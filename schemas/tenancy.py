"""Tenants inside stream ids: the same id in two tenants names two streams.

Inside Blackboard (the log, the deciders, the read models, the caches) an entity of a tenant other than
``default`` has the id ``<tenant>~<id>``: ``project:acme~p-1`` is tenant ``acme``'s project ``p-1``. The default
tenant's ids carry no prefix, so data written before tenants is the default tenant's as it stands, and nothing is
migrated. ``~`` is outside the id grammar (``types.Identifier``), so no caller can name another tenant's entity:
every id a caller sends is scoped to the caller's tenant on the way in (``scope_*``), and every id of the caller's
own tenant is shown without its prefix on the way out (``unscope_*``).

Note: the tenant lives in the id rather than beside it so that every structure keyed by a stream (a partition, a
decider's memory, a cache key, a read-model primary key, a history) separates tenants without being changed, and
a process manager that derives one stream from another stays inside the tenant of the first.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from blackboard.schemas.auth import DEFAULT_TENANT

SEPARATOR = "~"

#: The payload fields of a command that name another entity of the sender's tenant (scoped like the stream).
REFERENCES: dict[str, tuple[str, ...]] = {
    "task.create": ("depends_on", "parent"),
    "task.claim": ("node",),
    "task.fail_dependency": ("dependency",),
    "saga.start_artifact": ("project_id",),
    "project.register_artifact": ("task_id",),
}

_ID = r"[A-Za-z0-9][A-Za-z0-9._\-]*"
_TENANT = r"[A-Za-z0-9][A-Za-z0-9._\-]{0,62}"
#: A stored stream (``project:acme~p-1``), and a stored entity or command id (``acme~p-1``, ``acme~pm.saga:1f2e``:
#: command, correlation and causation ids may hold ``:`` and begin with any of their characters).
_SCOPED_STREAM = re.compile(rf"^(?P<category>[a-z][a-z_]*):(?P<tenant>{_TENANT}){SEPARATOR}(?P<ident>{_ID})$")
_SCOPED_ID = re.compile(rf"^(?P<tenant>{_TENANT}){SEPARATOR}(?P<ident>[A-Za-z0-9._:\-]+)$")


class TenantMismatch(ValueError):
    """A command whose stream and references name entities of different tenants."""


def is_default(tenant: str | None) -> bool:
    return tenant is None or tenant == DEFAULT_TENANT


def scope_id(tenant: str | None, ident: str) -> str:
    """``ident`` of ``tenant`` as stored: ``acme~p-1``; the default tenant's unchanged."""
    return ident if is_default(tenant) else f"{tenant}{SEPARATOR}{ident}"


def scope_stream(tenant: str | None, stream: str) -> str:
    """``project:p-1`` of ``tenant`` as stored: ``project:acme~p-1``."""
    if is_default(tenant):
        return stream
    category, _, ident = stream.partition(":")
    return f"{category}:{scope_id(tenant, ident)}"


def split_id(ident: str) -> tuple[str, str]:
    """``(tenant, id)`` of a stored id: ``acme~p-1`` → ``("acme", "p-1")``, ``p-1`` → ``("default", "p-1")``."""
    tenant, sep, local = ident.partition(SEPARATOR)
    return (tenant, local) if sep else (DEFAULT_TENANT, ident)


def tenant_of_stream(stream: str) -> str:
    """The tenant a stored stream belongs to."""
    return split_id(stream.partition(":")[2])[0]


def unscope_stream(stream: str) -> tuple[str, str]:
    """``(tenant, stream as its tenant names it)``: ``project:acme~p-1`` → ``("acme", "project:p-1")``."""
    category, _, ident = stream.partition(":")
    tenant, local = split_id(ident)
    return tenant, f"{category}:{local}"


def is_tenants_stream(tenant: str | None, stream: str) -> bool:
    """Whether stored ``stream`` is one ``tenant`` can name: of that tenant, its id without the prefix a valid id
    (no other ``~`` in it). ``project:acme~p-1`` is acme's and no one else's, not the default tenant's."""
    owner, local = unscope_stream(stream)
    return owner == (DEFAULT_TENANT if tenant is None else tenant) and SEPARATOR not in local


def id_prefix(tenant: str | None) -> str:
    """What every stored id of ``tenant`` starts with ("" for the default tenant, whose ids have no ``~``)."""
    return "" if is_default(tenant) else f"{tenant}{SEPARATOR}"


def sql_tenant_of(column: str) -> str:
    """A SQL expression of the tenant of the stored id in ``column`` (what a generated ``tenant`` column holds)."""
    return f"CASE WHEN strpos({column}, '{SEPARATOR}') > 0 THEN split_part({column}, '{SEPARATOR}', 1) " \
           f"ELSE '{DEFAULT_TENANT}' END"


# ── commands ─────────────────────────────────────────────────────────────────────────────────────────────


def scope_payload(tenant: str | None, command_type: str, payload: msgspec.Struct) -> msgspec.Struct:
    """``payload`` with every field that names another entity scoped to ``tenant``."""
    fields = REFERENCES.get(command_type)
    if not fields or is_default(tenant):
        return payload
    changes: dict[str, Any] = {}
    for name in fields:
        value = getattr(payload, name)
        if isinstance(value, str):
            changes[name] = scope_id(tenant, value)
        elif isinstance(value, list):
            changes[name] = [scope_id(tenant, v) for v in value]
    return msgspec.structs.replace(payload, **changes) if changes else payload


def unscope_command(stream: str, command_type: str, payload: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """``(tenant, stream, payload)`` of a command built from stored ids (a process manager's, a rollback's), as its
    tenant would send it; raises ``TenantMismatch`` when it names entities of two tenants."""
    tenant, local = unscope_stream(stream)
    out = dict(payload)
    for name in REFERENCES.get(command_type, ()):
        value = out.get(name)
        if isinstance(value, str):
            out[name] = _local(tenant, value)
        elif isinstance(value, list):
            out[name] = [_local(tenant, v) if isinstance(v, str) else v for v in value]
    return tenant, local, out


def _local(tenant: str, ident: str) -> str:
    owner, local = split_id(ident)
    if owner != tenant:
        raise TenantMismatch(f"{ident!r} is not an entity of tenant {tenant!r}")
    return local


# ── answers ──────────────────────────────────────────────────────────────────────────────────────────────


def unscope_value(tenant: str, value: str) -> str:
    """``value`` as ``tenant`` names it, when it is exactly a stored id or stream of ``tenant``; else unchanged."""
    m = _SCOPED_STREAM.match(value)
    if m is not None:
        return f"{m['category']}:{m['ident']}" if m["tenant"] == tenant else value
    m = _SCOPED_ID.match(value)
    return m["ident"] if m is not None and m["tenant"] == tenant else value


def unscope_text(tenant: str, text: str) -> str:
    """A message with every ``<tenant>~`` of ``tenant`` before an id removed (error details name stored ids)."""
    return re.sub(rf"(?<![A-Za-z0-9._\-]){re.escape(tenant)}{SEPARATOR}(?=[A-Za-z0-9])", "", text)


#: Keys whose string values are prose that may name stored ids inside them.
_PROSE = frozenset({"detail", "title", "message", "reason"})


def unscope_tree(tenant: str, value: Any, key: str | None = None) -> Any:
    """A decoded JSON answer with the stored ids of ``tenant`` shown as ``tenant`` names them.

    Note: a string is changed only when it is exactly ``<tenant>~<id>`` or ``<category>:<tenant>~<id>`` (or, under
    a prose key, where such an id appears inside it): the form ids take inside Blackboard, which a caller cannot
    send as an id. Free text of the tenant's own that is exactly of that form would be shown shortened too.
    """
    if isinstance(value, str):
        if SEPARATOR not in value:
            return value
        return unscope_text(tenant, value) if key in _PROSE else unscope_value(tenant, value)
    if isinstance(value, list):
        return [unscope_tree(tenant, v, key) for v in value]
    if isinstance(value, dict):
        return {unscope_value(tenant, k) if SEPARATOR in k else k: unscope_tree(tenant, v, k)
                for k, v in value.items()}
    return value


def unscope_json(tenant: str, body: bytes) -> bytes:
    """A JSON answer's bytes with the stored ids of ``tenant`` unscoped (unchanged when none is in it)."""
    if is_default(tenant) or f"{tenant}{SEPARATOR}".encode() not in body:
        return body
    return msgspec.json.encode(unscope_tree(tenant, msgspec.json.decode(body)))
