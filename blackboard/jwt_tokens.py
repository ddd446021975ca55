"""JWT bearer tokens (OIDC access tokens): signature against the issuer's JWKS, then ``iss``, ``aud``, ``exp`` and
``nbf``; the principal is the token's ``sub``, with its ``scope`` and its tenant claim.

Note: PyJWT (with ``cryptography``) checks the signature and the registered claims. A key of the JWKS is bound to
one algorithm (``PyJWK``), so a token cannot choose how it is verified: ``none`` and every ``HS*`` are refused by
the allow-list before any key is touched, and a key is never used with an algorithm of another family (the
"HS256 signed with the RSA public key" confusion).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import structlog

from blackboard.config import Settings
from blackboard.schemas.auth import TENANT_PATTERN, Principal
from blackboard.schemas.errors import ServiceUnavailable, Unauthorized

log = structlog.get_logger(__name__)

#: Which key types may verify which algorithms (a JWK without ``alg`` takes the token's, if of its family).
_FAMILY = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS (three base64url parts, a JSON header first), as opposed to an opaque API key."""
    return credential.count(".") == 2 and credential.startswith("eyJ")


def invalid(reason: str) -> Unauthorized:
    """The 401 of a token that is refused, saying why (never echoing the token)."""
    return Unauthorized(f"the bearer token is not valid: {reason}", code="invalid_credentials",
                        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Jwks:
    """The issuer's signing keys by ``kid``, from a file or a URL: cached, loaded again when a token names a
    ``kid`` it does not hold (at most once per ``refresh_seconds``), and, from a URL, once ``max_age`` old."""

    def __init__(self, *, file: Path | None, url: str | None, refresh_seconds: float, max_age: float) -> None:
        self._file, self._url = file, url
        self._refresh_seconds, self._max_age = refresh_seconds, max_age
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK of ``kid`` (``None``: the one key, when the set holds exactly one), or ``None``."""
        stale = self._url is not None and time.monotonic() - self._loaded_at > self._max_age
        found = self._find(kid)
        if found is None or stale:
            await self._refresh(force=stale)
            found = self._find(kid)
        return found

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            # Rate-limited: a stream of tokens with made-up kids must not become a stream of fetches.
            if not force and time.monotonic() - self._loaded_at < self._refresh_seconds:
                return
            try:
                document = await self._load()
            except (OSError, ValueError, httpx.HTTPError) as exc:
                log.warning("jwks.unavailable", source=str(self._url or self._file), error=repr(exc))
                if not self._keys:
                    raise ServiceUnavailable("the token issuer's keys cannot be loaded", code="jwks_unavailable",
                                             headers={"Retry-After": "5"}) from None
                self._loaded_at = time.monotonic()  # keep the keys we have; try again after the interval
                return
            self._keys = _signing_keys(document)
            self._loaded_at = time.monotonic()
            log.info("jwks.loaded", source=str(self._url or self._file), kids=sorted(self._keys))

    async def _load(self) -> Any:
        if self._file is not None:
            return json.loads(await asyncio.to_thread(self._file.read_bytes))
        assert self._url is not None
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            return response.json()


def _signing_keys(document: Any) -> dict[str, dict[str, Any]]:
    """The asymmetric signature keys of a JWKS by ``kid``: shared-secret (``oct``) and encryption keys are left out."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    usable = [k for k in keys if isinstance(k, dict) and k.get("kty") in _FAMILY and k.get("use", "sig") == "sig"]
    return {str(k.get("kid", "")): k for k in usable}


class JwtVerifier:
    """Turns a bearer token into its principal, or refuses it with a 401 that says why."""

    def __init__(self, settings: Settings) -> None:
        assert settings.jwt_issuer is not None and settings.jwt_audience is not None
        self._issuer, self._audience = settings.jwt_issuer, settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._algorithms = frozenset(settings.jwt_algorithm_list)
        self._tenant_claim = settings.jwt_tenant_claim
        self.jwks = Jwks(file=settings.jwt_jwks_file, url=settings.jwt_jwks_url,
                         refresh_seconds=settings.jwt_jwks_refresh_seconds, max_age=settings.jwt_jwks_max_age_seconds)

    async def principal_for(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid("it is not a JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise invalid(f"the algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        jwk = await self.jwks.key(kid if isinstance(kid, str) else None)
        if jwk is None:
            raise invalid("its key ('kid') is not one of the issuer's")
        return self._principal(self._claims(token, jwk, alg))

    def _claims(self, token: str, jwk: dict[str, Any], alg: str) -> dict[str, Any]:
        key_alg = jwk.get("alg") or alg
        if not alg.startswith(_FAMILY[jwk["kty"]]) or key_alg != alg:
            raise invalid(f"its key does not sign with {alg}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=jwt.PyJWK(jwk, algorithm=key_alg), algorithms=[alg], audience=self._audience,
                issuer=self._issuer, leeway=self._leeway, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise invalid("it has expired") from None
        except jwt.ImmatureSignatureError:
            raise invalid("it is not valid yet (nbf/iat)") from None
        except jwt.InvalidIssuerError:
            raise invalid("its issuer is not the configured one") from None
        except jwt.InvalidAudienceError:
            raise invalid("its audience is not this service") from None
        except jwt.PyJWTError as exc:
            raise invalid(type(exc).__name__) from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        sub, tenant = claims.get("sub"), claims.get(self._tenant_claim)
        if not isinstance(sub, str) or not sub:
            raise invalid("its 'sub' is not a name")
        if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
            raise invalid(f"its '{self._tenant_claim}' claim does not name a tenant")
        return Principal(sub, _scopes(claims), tenant)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """The Blackboard scopes of a token: ``scope`` (space-separated, RFC 8693/9068) or ``scp`` (a list)."""
    scope, scp = claims.get("scope"), claims.get("scp")
    given = scope.split() if isinstance(scope, str) else scp if isinstance(scp, list) else []
    return frozenset(s for s in given if isinstance(s, str) and s.startswith("blackboard:"))
