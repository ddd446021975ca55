"""HTTP reads of documents: one by id, and a collection's documents filtered by JSON containment.

``where={"status":"awaiting_review"}`` keeps the documents whose body contains that JSON
(PostgreSQL ``body @> …``, served by the GIN index on ``body``); ``link.<name>=<value>`` keeps those
linked to that id. Pages are keyset pages (``query_api.lists``): the cursor carries the sort, the
collection and the filters it was made for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import PathParameter, QueryParameter

from blackboard.query_api import lists
from blackboard.query_api.http import Cursor, EntityId, Token, consistent_reads
from blackboard.schemas.api import ErrorBody
from blackboard.schemas.auth import Principal
from blackboard.schemas.document import COLLECTION_PATTERN
from blackboard.schemas.errors import NotFound
from blackboard.schemas.tenancy import scope_id
from blackboard.schemas.types import unstorable_text
from blackboard.schemas.views import Page

#: Longest ``where`` accepted, in characters: a filter, not a document.
MAX_WHERE = 4096
SORTS = ("created_at", "-created_at", "updated_at", "-updated_at")
#: The fields of a listed or fetched document (what ``fields=`` may name at the top level).
ITEM_FIELDS = frozenset({"collection", "id", "body", "links", "version", "created_at", "updated_at",
                         "created_by", "updated_by", "deleted"})

Collection = Annotated[str, PathParameter(pattern=COLLECTION_PATTERN, description="the collection, e.g. 'reviews'")]
IncludeDeleted = Annotated[bool, QueryParameter(description="also documents deleted with doc.delete")]
Limit = Annotated[int, QueryParameter(ge=1, le=lists.MAX_PAGE_SIZE, description="documents per page")]

DOCUMENTS = lists.ListSpec(
    resource="documents",
    source="documents",
    # $1 collection, $2 the canonical JSON of ``where`` ('{}' contains every body), $3 include_deleted.
    scope="collection = $1::text AND body @> $2::text::jsonb AND (NOT deleted OR $3::boolean)",
    scope_params=3,
    sort_keys={
        "id": lists.SortKey("id", "text"),
        "created_at": lists.SortKey("created_at", "timestamp"),
        "updated_at": lists.SortKey("updated_at", "timestamp"),
    },
    filters={},
    id_key="id",
    default_sort="created_at",
    fields=ITEM_FIELDS,
    # ``id`` is the stream's stored id (``acme~reviews.r-1`` for tenant acme, whose collection is stored as
    # ``acme~reviews``): the scope's collection confines a page already, and this says so again. Links are kept as
    # their writer named them, so a ``link.<name>`` filter takes the value as given.
    tenant_key="id",
    dynamic=lists.DynamicField("link.", sort_sql="coalesce(links->>{name}, '')", filter_sql="links->>{name}"),
)

_ERRORS = {422: ResponseSpec(ErrorBody, description="invalid_filter, invalid_sort, invalid_cursor, unknown_field")}


def document_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``documents`` row as clients see it; ``id`` is the doc id within its collection (the collection as stored:
    the way out shows a tenant's as it named it)."""
    return {
        "collection": row["collection"], "id": row["doc_id"], "body": row["body"], "links": row["links"],
        "version": row["version"], "created_at": row["created_at"], "updated_at": row["updated_at"],
        "created_by": row["created_by"], "updated_by": row["updated_by"], "deleted": row["deleted"],
    }


@get("/v1/collections/{collection:str}/documents/{doc_id:str}", summary="One document", tags=["documents"],
     responses={404: ResponseSpec(ErrorBody, description="document_not_found")})
async def get_document(request: Request[None, None, State], principal: NamedDependency[Principal],
                       collection: Collection, doc_id: EntityId, include_deleted: IncludeDeleted = False,
                       consistent_with: Token = None) -> dict[str, Any]:
    """The document's ``version`` is what ``doc.patch`` takes as ``expected_version``.

    A deleted document is 404 ``document_not_found`` unless ``include_deleted=true``.
    """
    reads = await consistent_reads(request, consistent_with)
    # The row's id is the stream's: ``<collection>.<doc_id>`` scoped to the caller's tenant (``acme~notes.d-1``).
    stored = scope_id(principal.tenant, f"{collection}.{doc_id}")
    row = await reads.pool.fetchrow("SELECT * FROM documents WHERE id = $1", stored)
    if row is None or (row["deleted"] and not include_deleted):
        raise NotFound(f"collection {collection!r} has no document {doc_id!r}", code="document_not_found")
    return document_view(row)


@get("/v1/collections/{collection:str}/documents", summary="A collection's documents: filtered, sorted, cursor-paged",
     tags=["documents"], responses=_ERRORS)
async def list_documents(
    request: Request[None, None, State], principal: NamedDependency[Principal], collection: Collection,
    where: Annotated[str | None, QueryParameter(
        description='a JSON object the body must contain (jsonb containment), e.g. {"status":"awaiting_review"}',
        max_length=MAX_WHERE)] = None,
    sort: Annotated[str | None, QueryParameter(
        description="created_at (default, oldest first), -created_at, updated_at or -updated_at")] = None,
    fields: Annotated[str | None, QueryParameter(description="only these fields, e.g. 'id,body.status'")] = None,
    limit: Limit = 50, cursor: Cursor = None, include_deleted: IncludeDeleted = False, consistent_with: Token = None,
) -> Page:
    """Filters: ``where=<JSON object>`` on the body and ``link.<name>=<value>`` on the links (any number)."""
    if sort is not None and sort not in SORTS:
        raise lists.refuse("invalid_sort", "sort", f"sort={sort[:64]!r} is not one of {', '.join(SORTS)}")
    # A tenant's documents are in its own collections (``acme~reviews``: see ``schemas/document.py``).
    scope = (scope_id(principal.tenant, collection), parse_where(where), include_deleted)
    filters = lists.filter_params(DOCUMENTS, dict(request.query_params.items()))
    query = lists.parse_list_query(DOCUMENTS, sort=sort, filters=filters, page_size=limit, cursor=cursor,
                                   fields=fields, scope=scope)
    reads = await consistent_reads(request, consistent_with)
    rows, next_cursor = await lists.fetch_page(reads.pool, DOCUMENTS, query, scope, tenant=principal.tenant)
    return Page(items=[lists.select_fields(document_view(r), query.fields) for r in rows], next_cursor=next_cursor)


# ── where= ──────────────────────────────────────────────────────────────────────────────


def parse_where(raw: str | None) -> str:
    """``where`` → the canonical JSON text of the object the body must contain (``{}`` when absent).

    Refused with ``invalid_filter`` when it is not a JSON object, or holds what PostgreSQL's jsonb
    cannot (NUL, lone surrogates, NaN or infinite numbers).

    Note: canonical (keys sorted) so that the same filter spelled in another key order makes the
    same cursor fingerprint.
    """
    if raw is None:
        return "{}"
    try:
        value = json.loads(raw, parse_constant=_no_constant)
        bad = next(_unstorable(value), None)
    except (ValueError, RecursionError):
        raise _bad_where("is not JSON (or is nested too deeply)") from None
    if not isinstance(value, dict):
        raise _bad_where("is not a JSON object")
    if bad is not None:
        raise _bad_where(bad)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bad_where(why: str) -> Exception:
    return lists.refuse("invalid_filter", "where", f"where {why}; give a JSON object such as "
                                                   '{"status":"awaiting_review"}')


def _unstorable(value: Any) -> Iterator[str]:
    """Why ``value`` cannot be a jsonb value, for each reason found."""
    if isinstance(value, str):
        if unstorable_text(value):
            yield "holds text with NUL or a lone surrogate"
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield "holds a number too large to represent"
    elif isinstance(value, list):
        for item in value:
            yield from _unstorable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _unstorable(key)
            yield from _unstorable(item)


ROUTES = [get_document, list_documents]
