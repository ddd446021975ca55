"""The issuer's JWKS: fetched from a URL once and cached; an unknown ``kid`` loads it again, at most once per
interval; shared-secret keys are never taken from it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from blackboard.jwt_tokens import Jwks
from tests.integration.tokens import public_jwk


class Issuer(ThreadingHTTPServer):
    """A loopback JWKS endpoint that counts how often it is asked."""

    keys: list[dict[str, Any]]
    fetches = 0


class _Handler(BaseHTTPRequestHandler):
    server: Issuer

    def do_GET(self) -> None:
        self.server.fetches += 1
        body = json.dumps({"keys": self.server.keys}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer(("127.0.0.1", 0), _Handler)
    server.keys = [public_jwk("k1"), {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"}]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _jwks(issuer: Issuer, refresh_seconds: float) -> Jwks:
    return Jwks(file=None, url=f"http://127.0.0.1:{issuer.server_address[1]}/jwks",
                refresh_seconds=refresh_seconds, max_age=3600)


async def test_the_jwks_is_cached_and_an_unknown_kid_refreshes_it_at_most_once_per_interval(issuer: Issuer) -> None:
    jwks = _jwks(issuer, refresh_seconds=60)
    assert (await jwks.key("k1") or {}).get("kid") == "k1"
    assert (await jwks.key("k1") or {}).get("kid") == "k1"
    assert issuer.fetches == 1
    assert await jwks.key("shared") is None  # an HMAC secret is never a key of ours
    for _ in range(5):
        assert await jwks.key("made-up") is None
    assert issuer.fetches == 1  # the refresh interval has not passed: no fetch per made-up kid
    assert await jwks.key(None) is not None  # one key: a token without kid means it


async def test_a_new_kid_is_fetched_once_the_interval_allows(issuer: Issuer) -> None:
    jwks = _jwks(issuer, refresh_seconds=0)
    assert await jwks.key("k2") is None
    issuer.keys = [public_jwk("k1"), public_jwk("k2")]
    assert (await jwks.key("k2") or {}).get("kid") == "k2"
    assert await jwks.key(None) is None  # two keys: a token must say which
