"""The bodies of the reads that take one (a batch get): the same front as a command's body.

A route declares its body's Struct as usual (so that the OpenAPI document describes it) and runs
``json_front`` before it: the body must say it is UTF-8 JSON, and must pass the parse and the walk of
``blackboard.domain.decoding`` (no duplicate keys, NaN, text PostgreSQL cannot hold, or nesting past
its limit) before the framework decodes it into the Struct.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from blackboard.domain import decoding
from blackboard.query_api.errors import ApiError, InvalidRequest, UnsupportedMediaType

JSON = "application/json"


class MalformedJson(ApiError):
    status, code = 400, "malformed_json"


async def json_front(request: Request[Any, Any, Any]) -> None:
    """A ``before_request`` hook: refuse a body that is not UTF-8 JSON within our limits."""
    media_type, _, params = request.headers.get("content-type", "").partition(";")
    media_type = media_type.strip().lower()
    if media_type != JSON:
        raise UnsupportedMediaType(f"Content-Type must be {JSON}, got {media_type or 'nothing'!r}")
    charset = params.strip().lower().removeprefix("charset=").strip('"') if "charset=" in params.lower() else "utf-8"
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"a JSON body is UTF-8, not charset={charset!r}")
    try:
        decoding.check(await request.body())
    except decoding.BadInput as exc:
        if exc.malformed:
            raise MalformedJson("the body is not JSON", errors=exc.errors) from None
        raise InvalidRequest("the body is not a valid request", errors=exc.errors) from None
