"""The API's one family of errors, and the problem document (RFC 9457) each is answered with.

Both sides raise these (the command routes and the reads, HTTP and gRPC): an error carries its HTTP
status, a machine-readable ``code``, what is wrong, the JSON path of each bad field and the headers to
answer with. The wiring turns any of them into an ``application/problem+json`` answer; gRPC into a
status code with the same ``code`` in its trailing metadata. ``json_body`` is the one check of a JSON
body's media type and text that every route with a body runs before it decodes.
"""

from __future__ import annotations

from blackboard.schemas.api import ErrorBody, FieldError

#: The media type of every error answer (RFC 9457).
PROBLEM_JSON = "application/problem+json"
JSON = "application/json"
#: A problem's ``type`` is this followed by its code: a URI that names the code and is never fetched.
TYPE_PREFIX = "urn:blackboard:problem:"
#: Words of a code that a title writes in capitals.
_ACRONYMS = {"json": "JSON", "id": "ID", "url": "URL", "http": "HTTP", "dna": "DNA"}
#: Seconds a client waits before it retries a 503 or a 429 that did not say how long.
RETRY_AFTER_SECONDS = 1


class ApiError(Exception):
    """An error the API answers with a problem document: it carries its status, code and headers."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, errors: list[FieldError] | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors or []
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self, instance: str | None = None) -> ErrorBody:
        """The problem document of this error, for the request at ``instance`` (its path)."""
        return problem(self.status, self.code, self.message, self.errors, instance)


class MalformedJson(ApiError):
    status, code = 400, "malformed_json"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class InvalidRequest(ApiError):
    status, code = 422, "invalid_request"


class ServiceUnavailable(ApiError):
    """A dependency is down or a bounded wait ran out; trying again later can help (hence ``Retry-After``)."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None,
                 retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after), **(headers or {})})


def problem(status: int, code: str, message: str, errors: list[FieldError] | None = None,
            instance: str | None = None) -> ErrorBody:
    """The problem document of an error: RFC 9457's members, with ``code``, ``message`` and ``errors`` besides."""
    return ErrorBody(type=TYPE_PREFIX + code, title=title_of(code), status=status, detail=message,
                     instance=instance, code=code, message=message, errors=errors or [])


def title_of(code: str) -> str:
    """The title of every problem of ``code`` (``malformed_json``: "Malformed JSON"): the same for each
    occurrence, as RFC 9457 asks."""
    words = [_ACRONYMS.get(word, word) for word in code.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def retryable(status: int) -> bool:
    """Whether an answer of ``status`` invites the same request again later (and so carries ``Retry-After``)."""
    return status in (429, 503)
