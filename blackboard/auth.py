"""Who is calling, over HTTP and gRPC: an API key (``Authorization: Bearer <key>`` or ``X-API-Key``) or a JWT bearer
token; what it may do (its scopes) and how often (``blackboard.limits``); and where the server may listen.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from blackboard.config import Settings
from blackboard.jwt_tokens import JwtVerifier, looks_like_jwt
from blackboard.limits import Limits, RateLimiter
from blackboard.schemas.auth import ADMIN, ANONYMOUS, READ, WRITES, Principal, key_digest, parse_api_keys, presented_key
from blackboard.schemas.errors import Forbidden, Unauthorized
from blackboard.tenant_answers import remember_tenant

log = structlog.get_logger(__name__)


def missing_scope(scope: str, what: str) -> Forbidden:
    """The 403 of a principal without ``scope``: the code says so, the message and the challenge name the scope."""
    return Forbidden(f"{what} needs the scope '{scope}'", code="insufficient_scope",
                     headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})


class Authenticator:
    """Maps a presented credential to its principal; with none configured everyone is ``anonymous``."""

    def __init__(self, keys: dict[str, Principal], verifier: JwtVerifier | None = None) -> None:
        self._keys = [(digest.encode(), p) for digest, p in keys.items()]
        self.verifier = verifier

    @property
    def open(self) -> bool:
        """No credential configured: every caller is ``anonymous``."""
        return not self._keys and self.verifier is None

    async def principal_for(self, presented: str | None) -> Principal:
        """The principal of a presented credential (``None``: none presented); 401 when it is missing or invalid."""
        if self.open:
            return ANONYMOUS
        if presented is None:
            raise Unauthorized("a credential is required (Authorization: Bearer <API key or token>)",
                               code="missing_credentials", headers={"WWW-Authenticate": "Bearer"})
        if self.verifier is not None and looks_like_jwt(presented):
            return await self.verifier.principal_for(presented)
        return self._key_principal(presented)

    def _key_principal(self, presented: str) -> Principal:
        digest = key_digest(presented).encode()
        found = None
        for key, principal in self._keys:
            # Compare every digest in constant time so timing does not tell which prefix matched.
            if hmac.compare_digest(key, digest):
                found = principal
        if found is None:
            raise Unauthorized("the API key is not valid", code="invalid_credentials",
                               headers={"WWW-Authenticate": "Bearer"})
        return found


class Gate:
    """Every API call passes here: authenticated, checked for ``blackboard:read`` (reads), counted by the limiter,
    and its principal named in the log lines it causes."""

    def __init__(self, authenticator: Authenticator, limiter: RateLimiter) -> None:
        self.authenticator, self.limiter = authenticator, limiter

    async def http(self, request: Request[Any, Any, Any]) -> Principal:
        """The ``principal`` dependency of every HTTP route."""
        writes = bool(request.route_handler.opt.get(WRITES))
        client = request.client
        principal = await self.admit(_presented_key(request), client.host if client else "unknown", reads=not writes)
        remember_tenant(request.scope, principal.tenant)
        return principal

    async def admit(self, presented: str | None, address: str, *, reads: bool) -> Principal:
        """The principal of a call that presents ``presented`` from ``address`` (``reads``: it needs the read
        scope); raises the 401, 403 or 429 it is answered with."""
        principal = await self.authenticator.principal_for(presented)
        if reads and not principal.can_read:
            raise missing_scope(READ, "reading")
        # An anonymous caller is counted by its address; everyone else by its name, within its tenant.
        await self.limiter.check(principal, f"addr:{address}" if principal is ANONYMOUS else principal.name)
        structlog.contextvars.bind_contextvars(actor=principal.name, tenant=principal.tenant)
        return principal


def gate_for(settings: Settings, redis: Callable[[], aioredis.Redis | None]) -> Gate:
    """The gate of both transports, HTTP and gRPC (``redis``: the runtime's client once it is started)."""
    keys = parse_api_keys(settings.api_keys.get_secret_value()) if settings.api_keys else {}
    verifier = JwtVerifier(settings) if settings.jwt_enabled else None
    limits = Limits(settings.rate_limit_per_second, settings.rate_limit_per_tenant_per_second)
    return Gate(Authenticator(keys, verifier), RateLimiter(limits, redis, settings.redis_prefix))


def _presented_key(request: Request[Any, Any, Any]) -> str | None:
    return presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))


def guarded_paths(gate: Gate, prefixes: dict[str, str]) -> Callable[[ASGIApp], ASGIApp]:
    """An ASGI middleware that lets a request under one of ``prefixes`` (``/metrics``, ``/schema``) through only
    with a credential holding the scope the prefix maps to.

    Note: ``/metrics`` needs ``blackboard:admin``: its series are counted by tenant, so they name every tenant and
    how busy it is, which no tenant's reader may learn of another."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            needed = next((s for p, s in prefixes.items() if scope["path"].startswith(p)), None) \
                if scope["type"] == ScopeType.HTTP else None
            if needed is not None:
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                presented = presented_key(headers.get("authorization"), headers.get("x-api-key"))
                principal = await gate.authenticator.principal_for(presented)
                allowed = ADMIN in principal.scopes if needed == ADMIN else principal.can_read
                if not allowed:
                    raise missing_scope(needed, "reading " + scope["path"])
            await app(scope, receive, send)

        return guarded

    return middleware


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (a name that may resolve elsewhere is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class InsecureBind(RuntimeError):
    """The server would listen beyond loopback with no credential configured."""


def check_bind(settings: Settings, *, insecure: bool) -> bool:
    """Refuse (``InsecureBind``) to listen on a non-loopback address while every caller would be ``anonymous``
    with every right, unless ``insecure`` says so on purpose, which is logged as an error on every start;
    ``True`` when it lets such a bind through."""
    if settings.has_credentials or is_loopback(settings.host):
        return False
    if not insecure:
        raise InsecureBind(
            f"refusing to listen on {settings.host}: no API key or JWKS is configured, so every caller would have "
            "every right. Configure BLACKBOARD_API_KEYS or BLACKBOARD_JWT_JWKS_FILE/_URL, bind 127.0.0.1, or "
            "start with --insecure to accept that on purpose")
    log.error("auth.insecure", host=settings.host,
              message="listening beyond loopback with NO authentication: every caller has every right")
    return True
