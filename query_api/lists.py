"""Paged, sorted, filtered lists with field selection, declared once per resource as a ``ListSpec``.

A request's ``sort``, filters, ``page_size``, ``cursor`` and ``fields`` become one parameterised
statement: every SQL fragment comes from a spec (a whitelist), and every value the client typed,
including the name of a dynamic field, travels as a ``$n`` parameter, never as SQL text.

Why keyset (cursor) paging and not page numbers or offsets: ``OFFSET n`` makes PostgreSQL read and
throw away ``n`` rows, so a deep page costs as much as every page before it; and a row inserted or
deleted ahead of the reader shifts every later page, so an offset walk repeats or skips rows while
the list changes under it. A keyset cursor names the last row seen by its sort values plus the id
that breaks ties, so the next page is "the rows after that one": an index range scan costing
O(page) at any depth, and a walk that sees every row present for its whole duration exactly once,
whatever is inserted or updated meanwhile.

Note: the cursor is opaque to clients (base64url JSON) but not secret: it carries the sort it was
made for and a fingerprint of the filters and scope, and is refused (``invalid_cursor``) with others.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

# What the list machinery is used with, as this module's own names (``lists.TASKS``): the specs live apart.
from blackboard.query_api.list_specs import ARTIFACTS as ARTIFACTS
from blackboard.query_api.list_specs import (
    CAST,
    IDENTIFIER,
    MAX_FIELDS,
    SEGMENT,
    FilterTerm,
    Key,
    KeyType,
    ListQuery,
    SortTerm,
)
from blackboard.query_api.list_specs import MAX_PAGE_SIZE as MAX_PAGE_SIZE
from blackboard.query_api.list_specs import PROJECTS as PROJECTS
from blackboard.query_api.list_specs import SHOTS as SHOTS
from blackboard.query_api.list_specs import TASKS as TASKS
from blackboard.query_api.list_specs import DynamicField as DynamicField
from blackboard.query_api.list_specs import ListSpec as ListSpec
from blackboard.query_api.list_specs import SortKey as SortKey
from blackboard.schemas.api import FieldError
from blackboard.schemas.auth import DEFAULT_TENANT
from blackboard.schemas.errors import InvalidRequest
from blackboard.schemas.tenancy import SEPARATOR, id_prefix, is_default
from blackboard.schemas.types import unstorable_text


def refuse(code: str, param: str, message: str) -> InvalidRequest:
    """A 422 with ``code`` that names the query parameter at fault."""
    return InvalidRequest(message, code=code, errors=[FieldError(path=param, message=message)])


# ── parsing ─────────────────────────────────────────────────────────────────────────────


def resolve_key(spec: ListSpec, name: str, *, param: str, code: str) -> Key:
    """The spec's sort key ``name``, or a dynamic ``field.<identifier>``; ``code`` when neither."""
    if name in spec.sort_keys:
        known = spec.sort_keys[name]
        return Key(name, known.sql, known.type)
    dyn = spec.dynamic
    if dyn is not None and name.startswith(dyn.prefix):
        field = name.removeprefix(dyn.prefix)
        if not IDENTIFIER.match(field):
            raise refuse(code, param, f"{name!r}: a field name is a letter or '_' then letters, digits or '_'")
        return Key(name, dyn.sort_sql if code == "invalid_sort" else dyn.filter_sql, "text", field)
    allowed = ", ".join([*sorted(spec.sort_keys), *([f"{dyn.prefix}<name>"] if dyn else [])])
    raise refuse(code, param, f"cannot sort {spec.resource} by {name!r}; choose from {allowed}")


def parse_sort(spec: ListSpec, raw: str | None) -> tuple[SortTerm, ...]:
    """``-updated_at,id`` → sort terms, descending where prefixed by ``-``; the id key is appended if absent."""
    text = spec.default_sort if raw is None else raw
    terms: list[SortTerm] = []
    for piece in text.split(","):
        piece = piece.strip()
        desc = piece.startswith("-")
        name = piece.lstrip("+-")
        if not name:
            raise refuse("invalid_sort", "sort", f"sort={text!r} has an empty key; write e.g. '-updated_at,id'")
        if any(t.key.name == name for t in terms):
            raise refuse("invalid_sort", "sort", f"sort={text!r} names {name!r} twice")
        terms.append(SortTerm(resolve_key(spec, name, param="sort", code="invalid_sort"), desc))
    if not any(t.key.name == spec.id_key for t in terms):
        known = spec.sort_keys[spec.id_key]
        # The tie-breaker follows the last key's direction: a one-direction sort stays a row comparison.
        terms.append(SortTerm(Key(spec.id_key, known.sql, known.type), terms[-1].desc))
    return tuple(terms)


def sort_text(sort: Sequence[SortTerm]) -> str:
    """The canonical spelling of a sort (what a cursor records)."""
    return ",".join(("-" if t.desc else "") + t.key.name for t in sort)


def parse_filters(spec: ListSpec, params: Mapping[str, str]) -> tuple[FilterTerm, ...]:
    """Filter parameters → terms with typed values, in name order (so that equal requests fingerprint equally)."""
    terms: list[FilterTerm] = []
    for name in sorted(params):
        raw = params[name]
        allowed = spec.filters.get(name)
        if allowed is not None:
            value = _typed(raw, allowed.type, name, "invalid_filter")
            if allowed.choices is not None and value not in allowed.choices:
                choices = ", ".join(sorted(allowed.choices))
                raise refuse("invalid_filter", name, f"{name}={raw!r} is not one of {choices}")
            terms.append(FilterTerm(Key(name, allowed.sql, allowed.type), allowed.op, value))
        elif spec.dynamic is not None and name.startswith(spec.dynamic.prefix):
            terms.append(FilterTerm(resolve_key(spec, name, param=name, code="invalid_filter"), "=", raw))
        else:
            raise refuse("invalid_filter", name, f"{spec.resource} cannot be filtered by {name!r}; "
                                                 f"choose from {', '.join(sorted(spec.filters))}")
    return tuple(terms)


def filter_params(spec: ListSpec, query: Mapping[str, str]) -> dict[str, str]:
    """The query parameters of a request that are filters of ``spec`` (the others are not ours to judge)."""
    dyn = spec.dynamic
    return {k: v for k, v in query.items() if k in spec.filters or (dyn is not None and k.startswith(dyn.prefix))}


def parse_fields(spec: ListSpec, raw: str | Sequence[str] | None, *, param: str = "fields") -> tuple[str, ...] | None:
    """``a,b.c`` (or a list of paths) → the dot paths to keep; ``None`` keeps whole documents.

    A top-level name the resource does not have is refused with ``unknown_field``; for open
    documents (``spec.fields is None``) any well-formed name is allowed and simply absent where a
    document lacks it.
    """
    if raw is None:
        return None
    paths = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else list(raw)
    if not paths or len(paths) > MAX_FIELDS:
        raise refuse("unknown_field", param, f"{param} names 1 to {MAX_FIELDS} fields, not {len(paths)}")
    for path in paths:
        parts = path.split(".")
        if not all(SEGMENT.match(p) for p in parts):
            raise refuse("unknown_field", param, f"{path!r} is not a field path such as 'status' or 'payload.a'")
        if spec.fields is not None and parts[0] not in spec.fields:
            raise refuse("unknown_field", param, f"{spec.resource} have no field {parts[0]!r}; "
                                                 f"choose from {', '.join(sorted(spec.fields))}")
    return tuple(dict.fromkeys(paths))


def parse_list_query(spec: ListSpec, *, sort: str | None = None, filters: Mapping[str, str] | None = None,
                     page_size: int = 50, cursor: str | None = None, fields: str | Sequence[str] | None = None,
                     scope: Sequence[Any] = ()) -> ListQuery:
    """Everything a list request asked for, checked; raises ``InvalidRequest`` with the code at fault."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise refuse("invalid_request", "page_size", f"page_size is 1 to {MAX_PAGE_SIZE}, not {page_size}")
    terms = parse_sort(spec, sort)
    wanted = parse_filters(spec, filters or {})
    digest = fingerprint(spec, scope, wanted)
    after = decode_cursor(cursor, terms, digest) if cursor else None
    return ListQuery(terms, wanted, page_size, after, parse_fields(spec, fields), digest)


def _typed(raw: Any, type_: KeyType, param: str, code: str) -> Any:
    """``raw`` (query text, or a cursor's JSON value) as the Python value asyncpg sends for ``type_``."""
    try:
        if type_ == "int":
            value = raw if isinstance(raw, int) and not isinstance(raw, bool) else int(str(raw), 10)
            if not -(2**63) <= value < 2**63:
                raise ValueError("out of range")
            return value
        if type_ == "timestamp":
            stamp = datetime.fromisoformat(str(raw))
            if stamp.tzinfo is None:
                raise ValueError("no time zone")
            return stamp
        if not isinstance(raw, str) or unstorable_text(raw):
            raise ValueError("not text")
        return raw
    except ValueError:
        expect = {"int": "an integer", "timestamp": "an ISO 8601 time with its zone", "text": "text"}[type_]
        raise refuse(code, param, f"{param}={raw!r} is not {expect}") from None


# ── cursors ─────────────────────────────────────────────────────────────────────────────


def fingerprint(spec: ListSpec, scope: Sequence[Any], filters: Sequence[FilterTerm]) -> str:
    """A short digest of what a list is of (resource, scope, filters): a cursor is valid only for the same."""
    described = [spec.resource, [str(s) for s in scope], [[f.key.name, f.op, _json_value(f.value)] for f in filters]]
    return hashlib.sha256(msgspec.json.encode(described)).hexdigest()[:16]


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def encode_cursor(sort: Sequence[SortTerm], values: Sequence[Any], digest: str) -> str:
    """An opaque, URL-safe cursor: the sort, the list's fingerprint, and the sort values of the last row."""
    raw = msgspec.json.encode([sort_text(sort), digest, [_json_value(v) for v in values]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sequence[SortTerm], digest: str) -> tuple[Any, ...]:
    """The sort values a cursor carries, checked against the request's sort and fingerprint."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, made_print, values = msgspec.json.decode(raw, type=tuple[str, str, list[Any]])
    except (ValueError, msgspec.DecodeError):
        raise refuse("invalid_cursor", "cursor", "cursor is not one this API returned") from None
    if made_for != sort_text(sort):
        raise refuse("invalid_cursor", "cursor",
                     f"cursor was made for sort={made_for!r}, not sort={sort_text(sort)!r}; start again without it")
    if made_print != digest or len(values) != len(sort):
        raise refuse("invalid_cursor", "cursor", "cursor was made for other filters; start again without it")
    return tuple(_typed(v, t.key.type, "cursor", "invalid_cursor") for v, t in zip(values, sort, strict=True))


# ── SQL ─────────────────────────────────────────────────────────────────────────────────


class _Params:
    """The statement's ``$n`` parameters, numbered after the scope's own."""

    def __init__(self, scope: Sequence[Any]) -> None:
        self.values: list[Any] = list(scope)

    def add(self, value: Any, type_: KeyType) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{CAST[type_]}"


def _expression(key: Key, params: _Params) -> str:
    return key.sql if key.arg is None else key.sql.format(name=params.add(key.arg, "text"))


def _keyset(exprs: Sequence[str], sort: Sequence[SortTerm], after: Sequence[Any], params: _Params) -> str:
    """The rows strictly after ``after`` in the order ``sort``.

    Note: with one direction this is a row comparison, which PostgreSQL answers from a matching
    index; mixed directions need the expanded form (k1 after v1, or k1 = v1 and k2 after v2, …).
    """
    marks = [params.add(v, t.key.type) for v, t in zip(after, sort, strict=True)]
    if len({t.desc for t in sort}) == 1:
        op = "<" if sort[0].desc else ">"
        return f"({', '.join(exprs)}) {op} ({', '.join(marks)})"
    ors = []
    for i, term in enumerate(sort):
        equal = [f"{exprs[j]} = {marks[j]}" for j in range(i)]
        ors.append("(" + " AND ".join([*equal, f"{exprs[i]} {'<' if term.desc else '>'} {marks[i]}"]) + ")")
    return "(" + " OR ".join(ors) + ")"


def build_select(spec: ListSpec, query: ListQuery, scope: Sequence[Any] = (), *, tenant: str = DEFAULT_TENANT
                 ) -> tuple[str, list[Any]]:
    """The statement of one page (``page_size + 1`` rows, the extra one saying whether more follow) of ``tenant``'s
    rows, and its parameters.

    Each sort value comes back as column ``_sort_<i>``, from which the next cursor is made.
    """
    if len(scope) != spec.scope_params:
        raise ValueError(f"{spec.resource} takes {spec.scope_params} scope values, not {len(scope)}")
    params = _Params(scope)
    exprs = [_expression(t.key, params) for t in query.sort]
    where = [spec.scope]
    if spec.tenant_key is not None:
        # The default tenant's ids have no prefix; every other tenant's start with "<tenant>~".
        where.append(f"strpos({spec.tenant_key}, '{SEPARATOR}') = 0" if is_default(tenant)
                     else f"starts_with({spec.tenant_key}, {params.add(id_prefix(tenant), 'text')})")
    for f in query.filters:
        where.append(f"{_expression(f.key, params)} {f.op} {params.add(f.value, f.key.type)}")
    if query.after is not None:
        where.append(_keyset(exprs, query.sort, query.after, params))
    columns = ", ".join(f'{e} AS "_sort_{i}"' for i, e in enumerate(exprs))
    order = ", ".join(f"{e} DESC" if t.desc else e for e, t in zip(exprs, query.sort, strict=True))
    limit = params.add(query.page_size + 1, "int")
    sql = f"SELECT *, {columns} FROM {spec.source} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {limit}"
    return sql, params.values


async def fetch_page(db: asyncpg.Pool | asyncpg.Connection, spec: ListSpec, query: ListQuery,
                     scope: Sequence[Any] = (), *, tenant: str) -> tuple[list[asyncpg.Record], str | None]:
    """One page of ``tenant``'s rows and the cursor of the next page (``None`` on the last)."""
    sql, args = build_select(spec, query, scope, tenant=tenant)
    rows = await db.fetch(sql, *args)
    page = rows[: query.page_size]
    if len(rows) <= query.page_size:
        return page, None
    last = page[-1]
    return page, encode_cursor(query.sort, [last[f"_sort_{i}"] for i in range(len(query.sort))], query.fingerprint)


# ── field selection ─────────────────────────────────────────────────────────────────────


def select_fields(doc: Mapping[str, Any], fields: Sequence[str] | None, *, strict: bool = True) -> dict[str, Any]:
    """Only the dot paths ``fields`` of ``doc`` (all of it when ``None``), nested as in ``doc``.

    A top-level name ``doc`` lacks is refused with ``unknown_field`` when ``strict``; an open
    document (a shot) simply omits it. A nested path that does not exist is omitted.
    """
    if fields is None:
        return dict(doc)
    out: dict[str, Any] = {}
    taken: set[tuple[str, ...]] = set()
    # Shorter paths first: once "payload" is taken whole, "payload.a" has nothing to add (and must
    # not write into the document's own dict, which "payload" now shares).
    for parts in sorted((tuple(f.split(".")) for f in fields), key=len):
        if parts[0] not in doc:
            if strict:
                raise refuse("unknown_field", "fields", f"no field {parts[0]!r}")
            continue
        if any(parts[:i] in taken for i in range(1, len(parts))):
            continue
        found, value = _pick(doc, parts)
        if found:
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            taken.add(parts)
    return out


def _pick(doc: Mapping[str, Any], parts: Sequence[str]) -> tuple[bool, Any]:
    """``(True, value)`` at the dot path ``parts`` of ``doc``, or ``(False, None)`` where it does not exist."""
    value: Any = doc
    for part in parts:
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value
