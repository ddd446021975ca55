"""From the raw body of ``POST /v1/commands`` to a typed command, or the exact reasons it is not one.

One parse with the standard library catches what msgspec would let through silently (duplicate
keys, where the last would win) and what PostgreSQL cannot store (NUL, lone surrogates); then
msgspec converts the value into the command's Struct and names the JSON path of every bad field.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, NamedTuple

import msgspec

from blackboard.schemas.api import CommandRequest, FieldError
from blackboard.schemas.registry import COMMAND_TYPES

MAX_DEPTH = 32
MAX_ITEMS = 10_000
MAX_KEY_LENGTH = 256
MAX_INT = 2**53
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_REF = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
_AT = re.compile(r" - at `(\$[^`]*)`$")


class InvalidCommand(Exception):
    """The body is not a command: ``code`` is ``malformed_json`` or ``invalid_command``."""

    def __init__(self, code: str, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.code, self.errors = code, errors


class ValidCommand(NamedTuple):
    request: CommandRequest
    payload: msgspec.Struct
    category: str
    fingerprint: str


def validate_command(body: bytes) -> ValidCommand:
    """Decode and check ``body``; raise ``InvalidCommand`` with every reason found."""
    value = _parse(body)
    problems = list(_walk(value, "$", 0))
    if problems:
        raise InvalidCommand("invalid_command", problems[:20])
    request = _convert(value, CommandRequest, "$")
    category, payload_type = _command_type(request)
    _check_refs(request, category)
    payload = _convert(request.payload, payload_type, "$.payload")
    return ValidCommand(request, payload, category, command_fingerprint(request))


def command_fingerprint(request: CommandRequest) -> str:
    """What makes two commands the same: type, stream, expected version and payload (canonical JSON)."""
    canonical = json.dumps([request.type, request.stream, request.expected_version, request.payload],
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _malformed(message: str) -> InvalidCommand:
    return InvalidCommand("malformed_json", [FieldError("$", message)])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _malformed(f"duplicate object key {key[:64]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise _malformed(f"{name} is not a JSON number")


def _parse(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _malformed(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidCommand("invalid_command", [FieldError("$", f"nested deeper than {MAX_DEPTH} levels")]) from None


def _walk(value: Any, path: str, depth: int) -> Any:
    """Yield a ``FieldError`` for every value PostgreSQL could not store or that is beyond our limits."""
    if depth > MAX_DEPTH:
        yield FieldError(path, f"nested deeper than {MAX_DEPTH} levels")
    elif isinstance(value, str):
        yield from _check_text(value, path)
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            yield FieldError(path, "integer outside ±2^53 (not exact in JSON clients)")
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            yield FieldError(path, f"array of {len(value)} items is over the limit of {MAX_ITEMS}")
            return
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, dict):
        yield from _walk_object(value, path, depth)


def _walk_object(value: dict[str, Any], path: str, depth: int) -> Any:
    if len(value) > MAX_ITEMS:
        yield FieldError(path, f"object of {len(value)} keys is over the limit of {MAX_ITEMS}")
        return
    for key, item in value.items():
        child = f"{path}.{key}" if _ID.match(key) else f"{path}[{json.dumps(key[:64])}]"
        if len(key) > MAX_KEY_LENGTH:
            yield FieldError(child, f"object key longer than {MAX_KEY_LENGTH} characters")
        yield from _check_text(key, child)
        yield from _walk(item, child, depth + 1)


def _check_text(text: str, path: str) -> Any:
    if "\x00" in text:
        yield FieldError(path, "text contains NUL (U+0000)")
    if _SURROGATE.search(text):
        yield FieldError(path, "text contains a lone surrogate")


def _convert(value: Any, type_: Any, base: str) -> Any:
    try:
        return msgspec.convert(value, type=type_, strict=True)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _AT.search(message)
        path = base + found.group(1)[1:] if found else base
        raise InvalidCommand("invalid_command", [FieldError(path, _AT.sub("", message))]) from None


def _command_type(request: CommandRequest) -> tuple[str, type[msgspec.Struct]]:
    known = COMMAND_TYPES.get(request.type)
    if known is None:
        raise InvalidCommand("invalid_command", [
            FieldError("$.type", f"unknown command type {request.type[:64]!r}; known: {', '.join(COMMAND_TYPES)}")])
    return known


def _check_refs(request: CommandRequest, category: str) -> None:
    errors = []
    prefix, sep, ident = request.stream.partition(":")
    if prefix != category or not sep:
        errors.append(FieldError("$.stream", f"a {request.type} command goes to a stream '{category}:<id>'"))
    elif not _ID.match(ident):
        errors.append(FieldError("$.stream", "the id must be 1-128 letters, digits, '.', '_' or '-'"))
    for name in ("command_id", "correlation_id", "causation_id"):
        ref = getattr(request, name)
        if ref is not None and not _REF.match(ref):
            errors.append(FieldError(f"$.{name}", "must be 1-128 letters, digits, '.', '_', ':' or '-'"))
    if errors:
        raise InvalidCommand("invalid_command", errors)
