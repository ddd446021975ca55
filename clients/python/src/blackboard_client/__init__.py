"""The Python client of Blackboard: ``Client`` and ``AsyncClient``, the command builders in
``blackboard_client.commands``, the worker loop in ``blackboard_client.worker``."""

from blackboard_client.aio import AsyncClient
from blackboard_client.client import Client
from blackboard_client.errors import (
    ApiError,
    BlackboardError,
    LeaseLost,
    Rejected,
    SpoolFull,
    SpoolInUse,
    Unreachable,
)
from blackboard_client.lease import AsyncLease, Lease
from blackboard_client.models import (
    Accepted,
    BatchResult,
    Checkpoint,
    Claim,
    DryRun,
    EventView,
    Spooled,
    SpoolRejection,
)
from blackboard_client.spool import Spool

__version__ = "0.1.0"

__all__ = [
    "Accepted", "ApiError", "AsyncClient", "AsyncLease", "BatchResult", "BlackboardError", "Checkpoint", "Claim",
    "Client", "DryRun", "EventView", "Lease", "LeaseLost", "Rejected", "Spool", "SpoolFull", "SpoolInUse",
    "SpoolRejection", "Spooled", "Unreachable", "__version__",
]
