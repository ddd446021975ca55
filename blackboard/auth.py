"""Authentication of callers by API key (``Authorization: Bearer <key>`` or ``X-API-Key``), over HTTP and gRPC."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar import Request

from blackboard.config import Settings
from blackboard.query_api.errors import Unauthorized
from blackboard.schemas.auth import ANONYMOUS, Principal, parse_api_keys, presented_key


class Authenticator:
    """Maps a presented key to its principal; with no keys configured everyone is ``anonymous``."""

    def __init__(self, keys: dict[str, Principal]) -> None:
        self._keys = [(k.encode(), p) for k, p in keys.items()]

    def __call__(self, request: Request[Any, Any, Any]) -> Principal:
        return self.principal_for(_presented_key(request))

    def principal_for(self, presented: str | None) -> Principal:
        """The principal of a presented key (``None``: none presented); 401 when it is missing or unknown."""
        if not self._keys:
            return ANONYMOUS
        if presented is None:
            raise Unauthorized("an API key is required (Authorization: Bearer <key>)", code="missing_credentials",
                               headers={"WWW-Authenticate": "Bearer"})
        found = None
        for key, principal in self._keys:
            # Compare every key in constant time so timing does not tell which prefix matched.
            if hmac.compare_digest(key, presented.encode()):
                found = principal
        if found is None:
            raise Unauthorized("the API key is not valid", code="invalid_credentials",
                               headers={"WWW-Authenticate": "Bearer"})
        return found


def rate_limit_identity(request: Request[Any, Any, Any]) -> str:
    """Whom a rate limit counts: the credential presented (hashed), else the client address.

    Note: the key is hashed so that no secret sits in the limiter's store.
    """
    presented = _presented_key(request)
    if presented:
        return "key:" + hashlib.sha256(presented.encode()).hexdigest()[:32]
    client = request.client
    return f"addr:{client.host if client else 'unknown'}"


def _presented_key(request: Request[Any, Any, Any]) -> str | None:
    return presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))


def authenticator_for(settings: Settings) -> Authenticator:
    """The API-key check of both transports, HTTP and gRPC."""
    return Authenticator(parse_api_keys(settings.api_keys.get_secret_value()) if settings.api_keys else {})
