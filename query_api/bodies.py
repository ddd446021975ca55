"""The bodies of the reads that take one (a batch get): the same front as a command's body.

A route declares its body's Struct as usual (so that the OpenAPI document describes it) and runs
``json_front`` before it: the body must say it is UTF-8 JSON, and must pass the parse and the walk of
``blackboard.domain.decoding`` (no duplicate keys, NaN, text PostgreSQL cannot hold, or nesting past
its limit) before the framework decodes it into the Struct.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from blackboard.domain.decoding import json_body


async def json_front(request: Request[Any, Any, Any]) -> None:
    """A ``before_request`` hook: refuse a body that is not UTF-8 JSON within our limits."""
    json_body(request.headers.get("content-type"), await request.body())
