"""An issuer of JWT bearer tokens for the tests: its own RSA keys, its JWKS as a file, and honest and forged tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://issuer.blackboard.test"
AUDIENCE = "blackboard"


@cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """One RSA key per name for the whole run (made once: a key takes tens of milliseconds)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(name: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key(name).public_key()))
    return {**jwk, "kid": name, "alg": "RS256", "use": "sig"}


def write_jwks(path: Path, *names: str) -> Path:
    path.write_text(json.dumps({"keys": [public_jwk(n) for n in names]}))
    return path


def jwt_settings(jwks: Path, **extra: Any) -> dict[str, Any]:
    """The settings of a server that trusts this issuer (a short leeway, so that expiry is quick to test)."""
    return {"jwt_jwks_file": jwks, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_leeway_seconds": 5,
            **extra}


def claims(sub: str = "alice", *, scope: str = "blackboard:read blackboard:write", tenant: str | None = "acme",
           **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    made: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300,
                            "scope": scope}
    if tenant is not None:
        made["tenant"] = tenant
    return {**made, **extra}


def token(made: dict[str, Any] | None = None, *, kid: str = "k1", key: str | None = None) -> str:
    """A token signed with the key of ``key`` (default: the key ``kid`` names) by RS256."""
    return jwt.encode(made or claims(), rsa_key(key or kid), algorithm="RS256", headers={"kid": kid})


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(made: dict[str, Any], kid: str = "k1") -> str:
    """``alg: none``: no signature at all."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{_b64(json.dumps(made).encode())}."


def hs256_with_public_key(made: dict[str, Any], kid: str = "k1") -> str:
    """The algorithm confusion: HS256 whose shared secret is the issuer's public key (which anyone has)."""
    pem = rsa_key(kid).public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}." \
                    f"{_b64(json.dumps(made).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tampered(honest: str, **changes: Any) -> str:
    """An honest token whose payload was changed after signing (the signature is the original one)."""
    header, payload, signature = honest.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return f"{header}.{_b64(json.dumps({**decoded, **changes}).encode())}.{signature}"
