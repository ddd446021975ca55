"""Reads confined by PostgreSQL to one tenant's rows: the second line of defence behind the scoped ids.

Every read-model table of a tenant's rows has a ``tenant`` column and row-level security (the read models'
migration ``0010_tenant_rows``): the role ``READER_ROLE`` sees only the rows whose ``tenant`` is the setting
``TENANT_SETTING``, and none without it. With ``BLACKBOARD_READ_ROW_SECURITY`` the read pool switches each
connection a caller's read takes to that role with the caller's tenant (``confine``), whatever the statement asks,
so that an id scoped wrongly on the way in still finds nothing of another tenant.

Which tenant a read is made for is the context's: an HTTP request's (its principal, once the gate has admitted
it), a gRPC call's (``reading_as``). Outside both (the process's own reads: the cache warming at start) reads
are not confined.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import asyncpg

#: The role a caller's reads run as (made by the read models' migration 0010).
READER_ROLE = "blackboard_tenant_reader"
#: The setting its policies compare each row's ``tenant`` with.
TENANT_SETTING = "blackboard.tenant"
_CONFINE = f"SELECT set_config('role', '{READER_ROLE}', false), set_config('{TENANT_SETTING}', $1, false)"

#: How the reads of the current context learn their tenant: ``None`` outside a caller's request or call.
_TENANT_OF: ContextVar[Callable[[], str | None] | None] = ContextVar("blackboard_reading_tenant", default=None)


def reading_for(tenant_of: Callable[[], str | None]) -> contextlib.AbstractContextManager[None]:
    """The reads made inside are a caller's, of the tenant ``tenant_of()`` names when each read starts.

    Note: a callable, not the tenant: an HTTP request's principal is admitted after the request has started
    (a dependency, perhaps run in a task of its own), so its reads ask for the tenant when they run.
    """
    return _reading(tenant_of)


def reading_as(tenant: str) -> contextlib.AbstractContextManager[None]:
    """The reads made inside are a caller's of ``tenant`` (a gRPC call's, once its principal is known)."""
    return _reading(lambda: tenant)


def unconfined() -> contextlib.AbstractContextManager[None]:
    """The reads made inside are not confined: only for what holds no tenant's rows and is found through a
    confined read (a checkpoint's bytes in the blob store, by the content hash its confined entry names)."""
    return _reading(None)


@contextlib.contextmanager
def _reading(tenant_of: Callable[[], str | None] | None) -> Iterator[None]:
    token = _TENANT_OF.set(tenant_of)
    try:
        yield
    finally:
        _TENANT_OF.reset(token)


def reading_tenant() -> str | None:
    """The tenant the current context reads for: ``""`` for a caller whose principal is not (yet) known, which
    sees no row at all; ``None`` outside a caller's request or call."""
    tenant_of = _TENANT_OF.get()
    if tenant_of is None:
        return None
    return tenant_of() or ""


async def confine(conn: asyncpg.Connection) -> None:
    """Make ``conn`` read as ``READER_ROLE`` with the current caller's tenant (nothing outside a caller's request).

    Note: for the session, not a transaction, so that a read's own transactions (of any isolation) work as
    before; the read pool's reset on release ends the role (``blackboard.pools.ReadConnection``) and the setting
    (``RESET ALL``), and a connection whose reset fails is closed, never reused.
    """
    tenant = reading_tenant()
    if tenant is not None:
        await conn.execute(_CONFINE, tenant)
