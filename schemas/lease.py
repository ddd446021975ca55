"""Lease commands and events: a named lease on a resource, granted to one holder for a time.

Every grant carries a fencing token one above the previous grant's, so whatever a holder writes
to can refuse a token older than one it has already seen: a holder that paused past its expiry
is detected, which a lock with a TTL alone cannot do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from blackboard.schemas.project import TtlSeconds
from blackboard.schemas.types import Identifier

FencingToken = Annotated[int, msgspec.Meta(ge=1, le=2**53)]


class AcquireLease(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``lease.acquire``: hold the lease for ``ttl_seconds``; refused with ``lease_held`` while another holds it.

    Acquiring again while already holding it extends it and keeps the token.
    """

    holder: Identifier
    ttl_seconds: TtlSeconds = 30


class RenewLease(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``lease.renew``: extend a lease still held with ``token``; refused with ``lease_lost`` otherwise."""

    holder: Identifier
    token: FencingToken
    ttl_seconds: TtlSeconds = 30


class ReleaseLease(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``lease.release``: give the lease up before it expires."""

    holder: Identifier
    token: FencingToken


class LeaseGranted(msgspec.Struct, frozen=True):
    holder: str
    token: int
    expires_at: datetime


class LeaseRenewed(msgspec.Struct, frozen=True):
    holder: str
    token: int
    expires_at: datetime


class LeaseReleased(msgspec.Struct, frozen=True):
    """The lease became free: ``released`` by its holder, or found ``expired`` by the next acquirer."""

    holder: str
    token: int
    why: Literal["released", "expired"]


LeaseCommand = AcquireLease | RenewLease | ReleaseLease
LeaseEvent = LeaseGranted | LeaseRenewed | LeaseReleased
