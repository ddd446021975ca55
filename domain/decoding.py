"""From the raw bytes of a JSON body to a typed value, or the exact reasons it is not one.

The one front every route with a body goes through (a command, a batch get, a document). Three
steps. One parse with the standard library refuses what msgspec would let through silently
(duplicate keys, where the last would win; NaN and Infinity) and nesting too deep to walk. A walk
over the parsed value refuses what PostgreSQL cannot store (NUL, lone surrogates) and what is beyond
our limits, naming the JSON path of each bad value. Then msgspec converts the value into the Struct,
and its errors are moved under the path they belong to.

A command's body (``validate_command``, the second step of ``POST /v1/commands``, and of every other
way a command comes in) then gets the command's own checks: a known type, a stream of its category,
references that are identifiers, and the payload converted to its command's Struct.

Note: pure, like the deciders, and here for the same reason they are: both sides read it (the
command routes and the query API's bodies), and neither may import the other.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from itertools import islice
from typing import Annotated, Any, NamedTuple, TypeVar, get_args, get_origin

import msgspec

from blackboard.schemas import types
from blackboard.schemas.api import CommandRequest, FieldError
from blackboard.schemas.errors import JSON, InvalidRequest, MalformedJson, UnsupportedMediaType
from blackboard.schemas.registry import COMMAND_TYPES
from blackboard.schemas.task import CreateTask
from blackboard.schemas.types import Identifier, unstorable_text

T = TypeVar("T")

#: Most levels of arrays and objects, the body's own object included.
MAX_DEPTH = 32
#: Most items of one array or object.
MAX_ITEMS = 10_000
MAX_KEY_LENGTH = 256
#: Integers beyond this are not exact in JavaScript and most JSON clients.
MAX_INT = 2**53
#: Errors reported at most; the first ones say enough.
MAX_ERRORS = 20

_SHORTHAND = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AT = re.compile(r" - at `(\$[^`]*)`$")
_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]*)`$")


class BadInput(Exception):
    """The body is not what was asked for: ``malformed`` (not JSON at all) or not (valid JSON that breaks
    the type or our limits), with the JSON path of every bad value."""

    def __init__(self, malformed: bool, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.malformed = malformed
        self.errors = errors


def decode(body: bytes, type_: type[T]) -> T:
    """``body`` as a ``type_``: parsed, walked and converted; raise ``BadInput`` with every reason found."""
    return convert(check(body), type_, "$")


def check(body: bytes) -> Any:
    """``body`` parsed and walked (steps 1 and 2): JSON within our limits, not yet of any type."""
    value = parse(body)
    if not _clean(value, 0):  # the walk names the paths: only a body with something to name is walked
        refuse(list(islice(walk(value, "$", 0), MAX_ERRORS)))
    return value


def refuse(errors: list[FieldError]) -> None:
    if errors:
        raise BadInput(False, errors)


# ── step 1: parse ──────────────────────────────────────────────────────────────────────


class _HugeInt(msgspec.Struct, frozen=True):
    """An integer literal too long to be within ±2^53; the walk reports it with its path."""

    digits: int


def parse(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        if text.startswith("\ufeff"):  # as ``json.loads`` refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise _malformed(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BadInput(False, [FieldError("$", _too_deep())]) from None


def _malformed(message: str) -> BadInput:
    return BadInput(True, [FieldError("$", message)])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) < len(pairs):  # a key came twice: name the first repeated one
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _malformed(f"duplicate object key {key[:64]!r}")
            seen.add(key)
    return result


def _no_constant(name: str) -> Any:
    raise _malformed(f"{name} is not a JSON number")


def _parse_int(text: str) -> int | _HugeInt:
    digits = len(text.lstrip("-"))
    # 2^53 has 16 digits; longer literals are out of range, and int() of very long ones raises.
    return _HugeInt(digits) if digits > 16 else int(text)


#: The parser of every body, made once (``json.loads`` with these hooks makes one per call).
_JSON = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_int=_parse_int)


# ── step 2: walk ───────────────────────────────────────────────────────────────────────


def walk(value: Any, path: str, depth: int) -> Iterator[FieldError]:
    """Yield a ``FieldError`` for every value PostgreSQL could not store or that is beyond our limits."""
    if isinstance(value, str):
        yield from _text_errors(value, path)
    elif isinstance(value, _HugeInt):
        yield FieldError(path, f"integer of {value.digits} digits is outside ±2^53")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            yield FieldError(path, "integer outside ±2^53 (not exact in JSON clients)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield FieldError(path, "number too large to represent")
    elif depth >= MAX_DEPTH:
        yield FieldError(path, _too_deep())
    elif isinstance(value, list):
        yield from _walk_array(value, path, depth)
    elif isinstance(value, dict):
        yield from _walk_object(value, path, depth)


def _clean(value: Any, depth: int) -> bool:
    """Whether ``walk`` would find nothing in ``value``: the same checks, without making a path for each value."""
    if isinstance(value, str):
        return unstorable_text(value) is None
    if isinstance(value, _HugeInt):
        return False
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -MAX_INT <= value <= MAX_INT
    if isinstance(value, float):
        return math.isfinite(value)
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, list):
        return len(value) <= MAX_ITEMS and all(_clean(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return len(value) <= MAX_ITEMS and all(
            len(key) <= MAX_KEY_LENGTH and unstorable_text(key) is None and _clean(item, depth + 1)
            for key, item in value.items())
    return True


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels of arrays and objects"


def _walk_array(value: list[Any], path: str, depth: int) -> Iterator[FieldError]:
    if len(value) > MAX_ITEMS:
        yield FieldError(path, f"array of {len(value)} items is over the limit of {MAX_ITEMS}")
        return
    for i, item in enumerate(value):
        yield from walk(item, f"{path}[{i}]", depth + 1)


def _walk_object(value: dict[str, Any], path: str, depth: int) -> Iterator[FieldError]:
    if len(value) > MAX_ITEMS:
        yield FieldError(path, f"object of {len(value)} keys is over the limit of {MAX_ITEMS}")
        return
    for key, item in value.items():
        child = member(path, key)
        if len(key) > MAX_KEY_LENGTH:
            yield FieldError(child, f"object key of {len(key)} characters is over the limit of {MAX_KEY_LENGTH}")
        yield from _text_errors(key, child)
        yield from walk(item, child, depth + 1)


def member(path: str, key: str) -> str:
    """The path of ``key`` under ``path``: ``$.a`` for plain names, ``$["a b"]`` for the rest."""
    if _SHORTHAND.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key[:64])}]"


def _text_errors(text: str, path: str) -> Iterator[FieldError]:
    problem = unstorable_text(text)
    if problem:
        yield FieldError(path, problem)


# ── step 3: convert ────────────────────────────────────────────────────────────────────


def convert(value: Any, type_: type[T], base: str) -> T:
    try:
        return msgspec.convert(value, type=type_, strict=True)
    except msgspec.ValidationError as exc:
        raise BadInput(False, [_field_error(str(exc), base)]) from None


def _field_error(message: str, base: str) -> FieldError:
    """Turn msgspec's ``"<what> - at `$.x`"`` into a ``FieldError`` under ``base``.

    Note: msgspec names an unknown or missing field in the text, at the path of the object that
    holds it; the error goes to the field itself (``$.payload.colour``), where a client looks.
    """
    found = _AT.search(message)
    path = base + found.group(1)[1:] if found else base
    message = _AT.sub("", message)
    message = _PATTERN_TEXTS.get(message, message)
    field = _FIELD.match(message)
    return FieldError(member(path, field.group(1)) if field else path, message)


def _pattern_texts() -> dict[str, str]:
    """msgspec's "matching regex '<pattern>'" → the description of the schema type with that pattern."""
    texts: dict[str, str] = {}
    for alias in vars(types).values():
        if get_origin(alias) is not Annotated:
            continue
        for meta in get_args(alias)[1:]:
            if isinstance(meta, msgspec.Meta) and meta.pattern and meta.description:
                texts[f"Expected `str` matching regex {meta.pattern!r}"] = f"Expected {meta.description}"
    return texts


#: A client reads "a decimal string greater than 0 ..." more easily than the regex that says it.
_PATTERN_TEXTS = _pattern_texts()


# ── a command: the body of POST /v1/commands, checked ──────────────────────────────────


_REF = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class InvalidCommand(Exception):
    """The body is not a command: ``code`` is ``malformed_json`` or ``invalid_command``.

    ``malformed_json`` means the body is not JSON at all; ``invalid_command`` means valid JSON
    that breaks the command schema or our limits, with the JSON path of every bad value.
    """

    def __init__(self, code: str, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.code = code
        self.errors = errors


class ValidCommand(NamedTuple):
    """A command that passed every check, with where it goes and what identifies it."""

    request: CommandRequest
    payload: msgspec.Struct
    category: str
    stream_id: str
    fingerprint: str


def validate_command(body: bytes) -> ValidCommand:
    """Decode and check ``body``; raise ``InvalidCommand`` with every reason found."""
    try:
        request = decode(body, CommandRequest)
    except BadInput as exc:
        raise InvalidCommand("malformed_json" if exc.malformed else "invalid_command", exc.errors) from None
    category, payload_type = _command_type(request)
    errors = _reference_errors(request, category)
    try:
        payload = convert(request.payload, payload_type, "$.payload")
    except BadInput as exc:
        raise InvalidCommand("invalid_command", errors + exc.errors) from None
    _refuse(errors)
    stream_id = request.stream.partition(":")[2]
    _refuse_self_dependency(payload, stream_id)
    return ValidCommand(request, payload, category, stream_id, command_fingerprint(request))


#: ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, the encoder made once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def command_fingerprint(request: CommandRequest) -> str:
    """What makes two commands the same: sha256 of the canonical JSON of type, stream, expected
    version and payload (keys sorted).

    Note: the fingerprint is stored with every outcome; changing how it is computed would make
    every repeated ``command_id`` look like a different command.
    """
    canonical = _CANONICAL.encode([request.type, request.stream, request.expected_version, request.payload])
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _refuse(errors: list[FieldError]) -> None:
    if errors:
        raise InvalidCommand("invalid_command", errors)


def _refuse_self_dependency(payload: msgspec.Struct, task_id: str) -> None:
    """Refuse, with the code ``self_dependency``, a task that names itself in ``depends_on``.

    Note: checked here and not in the decider: only the request knows the stream a payload goes to,
    and a task waiting for itself could never run.
    """
    if isinstance(payload, CreateTask) and task_id in payload.depends_on:
        at = payload.depends_on.index(task_id)
        raise InvalidCommand("self_dependency", [FieldError(
            f"$.payload.depends_on[{at}]", f"task {task_id!r} may not depend on itself")])


def _command_type(request: CommandRequest) -> tuple[str, type[msgspec.Struct]]:
    known = COMMAND_TYPES.get(request.type)
    if known is None:
        raise InvalidCommand("invalid_command", [FieldError(
            "$.type", f"unknown command type {request.type[:64]!r}; known: {', '.join(sorted(COMMAND_TYPES))}")])
    return known


def _reference_errors(request: CommandRequest, category: str) -> list[FieldError]:
    errors = []
    prefix, sep, ident = request.stream.partition(":")
    if not sep or prefix != category:
        errors.append(FieldError(
            "$.stream", f"a {request.type} command goes to a stream '{category}:<id>', not {request.stream[:64]!r}"))
    elif not _is_identifier(ident):
        errors.append(FieldError(
            "$.stream", f"the id {ident[:64]!r} must be 1-128 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit"))
    for name in ("command_id", "correlation_id", "causation_id"):
        ref = getattr(request, name)
        if ref is not None and not _REF.fullmatch(ref):
            errors.append(FieldError(f"$.{name}", f"{ref[:64]!r} must be 1-128 letters, digits, '.', '_', ':' or '-'"))
    return errors


def _is_identifier(text: str) -> bool:
    """Whether msgspec would take ``text`` as an ``Identifier``: its length and pattern (searched, as msgspec does).

    Note: the constraints are read from the type, once; ``msgspec.convert`` to an ``Annotated`` type hashed
    the type on every call, which cost more than the check.
    """
    return _ID_MIN <= len(text) <= _ID_MAX and _ID_PATTERN.search(text) is not None


_ID_META: msgspec.Meta = get_args(Identifier)[1]
_ID_MIN, _ID_MAX = _ID_META.min_length or 0, _ID_META.max_length or MAX_KEY_LENGTH
_ID_PATTERN = re.compile(_ID_META.pattern or "")


def require_json(content_type: str | None) -> None:
    """Refuse (415) a body whose ``Content-Type`` is not JSON in UTF-8."""
    media_type, _, params = (content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type != JSON:
        raise UnsupportedMediaType(f"Content-Type must be {JSON}, got {media_type or 'nothing'!r}")
    # JSON is UTF-8 (RFC 8259): a body that says it is another charset would be read wrongly.
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"a JSON body is UTF-8, not charset={charset!r}")


def json_body(content_type: str | None, body: bytes, *, required: bool = True) -> Any:
    """``body`` parsed, once it says it is UTF-8 JSON (else 415) and is JSON within our limits (else 400
    ``malformed_json``, 422 ``invalid_request``); with ``required=False`` an empty body is ``None``."""
    if not body and not required:
        return None
    require_json(content_type)
    try:
        return check(body)
    except BadInput as exc:
        if exc.malformed:
            raise MalformedJson("the body is not JSON", errors=exc.errors) from None
        raise InvalidRequest("the body is not a valid request", errors=exc.errors) from None
