"""Answers in the caller's own ids: a tenant's stored ids (``acme~p-1``) are shown as it named them (``p-1``).

Every id a caller sends is scoped to its tenant on the way in (``schemas/tenancy.py``); this ASGI middleware is
the way out for every JSON answer of the HTTP API, success or problem, so that no route has to remember it. The
default tenant's ids carry no prefix: its answers pass through untouched, at no cost.
"""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from blackboard.schemas.tenancy import is_default, unscope_json

#: Where ``Gate.http`` leaves the admitted principal's tenant in the request's ASGI scope.
TENANT_KEY = "blackboard.tenant"

_JSON_TYPES = (b"application/json", b"application/problem+json")


def remember_tenant(scope: Any, tenant: str) -> None:
    """Note ``tenant`` as the one whose ids the answer to this request shows."""
    scope[TENANT_KEY] = tenant


def tenant_answers(app: ASGIApp) -> ASGIApp:
    """Rewrite the JSON answers to a non-default tenant's requests (streams, such as server-sent events, pass)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        start: Any = None
        chunks: list[bytes] = []

        async def rewriting(message: Any) -> None:
            nonlocal start
            tenant: str | None = scope.get(TENANT_KEY)  # type: ignore[assignment]
            if message["type"] == "http.response.start":
                if is_default(tenant) or not _is_json(message):
                    await send(message)
                else:
                    start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = unscope_json(str(tenant), b"".join(chunks))
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            start["headers"] = headers
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await app(scope, receive, rewriting)

    return middleware


def _is_json(start: Any) -> bool:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() in _JSON_TYPES
    return False
