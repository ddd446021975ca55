"""The document decider: stream ``doc:<collection>.<doc_id>``; a JSON body changed by merge patches.

The stream's version is the document's version, so the envelope's ``expected_version`` is the
optimistic lock of a patch (checked by the owner before ``decide``). The collection, read from
the stream id, chooses the rules of ``schemas.document.COLLECTION_RULES``.

A tenant's document is on ``doc:<tenant>~<collection>.<doc_id>``: its events and state name the collection as
stored (``acme~reviews``, as every id inside Blackboard is), and the rules are those of the collection its tenant
named (``reviews``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from blackboard.domain.decider import Context, Rejection
from blackboard.schemas.document import (
    COLLECTION_PATTERN,
    CreateDocument,
    DeleteDocument,
    DocumentCommand,
    DocumentCreated,
    DocumentDeleted,
    DocumentEvent,
    DocumentPatched,
    PatchDocument,
    check_document,
    local_collection,
    split_document_id,
    with_defaults,
)
from blackboard.schemas.merge_patch import merge_patch

CATEGORY = "doc"


class Document(msgspec.Struct, frozen=True):
    """A document as decisions and the read model need it; a deleted one keeps its last body."""

    collection: str
    doc_id: str
    body: dict[str, Any]
    links: dict[str, str] = {}
    deleted: bool = False
    created_by: str = ""
    updated_by: str = ""
    delete_reason: str | None = None


#: The stream does not exist yet.
initial_state: Document | None = None


def evolve(state: Document | None, event: DocumentEvent) -> Document | None:
    """The state after ``event``. Total and trusting: an appended event happened."""
    match event:
        case DocumentCreated(collection, doc_id, body, links, by):
            return Document(collection, doc_id, dict(body), dict(links), created_by=by, updated_by=by)
        case DocumentPatched(patch, by) if state is not None:
            return msgspec.structs.replace(state, body=merge_patch(state.body, patch), updated_by=by)
        case DocumentDeleted(by, reason) if state is not None:
            return msgspec.structs.replace(state, deleted=True, updated_by=by, delete_reason=reason)
    return state


def decide(state: Document | None, command: DocumentCommand, ctx: Context) -> list[DocumentEvent] | Rejection:
    """The events ``command`` causes in ``state``, or the rule that refuses it."""
    ident = ctx.stream.partition(":")[2]
    named = split_document_id(ident)
    if not ctx.require("the stream names a collection and a document", named is not None):
        return Rejection("invalid_collection",
                         f"{ctx.stream!r} is not 'doc:<collection>.<doc_id>' with a collection matching "
                         f"{COLLECTION_PATTERN}", {"stream": ctx.stream, "pattern": COLLECTION_PATTERN})
    assert named is not None
    if isinstance(command, CreateDocument):
        return _create(state, named, command, ctx)
    if not ctx.require("the document exists", state is not None):
        return Rejection("not_found", f"{ident} does not exist; create it first with doc.create", {"document": ident})
    assert state is not None
    if isinstance(command, DeleteDocument):
        return [] if state.deleted else [DocumentDeleted(ctx.actor, command.reason)]
    if not ctx.require("the document is not deleted", not state.deleted):
        return Rejection("document_deleted", f"{ident} was deleted; it takes no more patches", {"document": ident})
    return _patch(state, command, ctx)


def _create(state: Document | None, named: tuple[str, str], command: CreateDocument,
            ctx: Context) -> list[DocumentEvent] | Rejection:
    collection, doc_id = named
    body = with_defaults(local_collection(collection), command.body)
    if state is not None:
        same = not state.deleted and state.body == body and state.links == command.links
        if not ctx.require("the document does not exist, or is this very document", same):
            code = "document_deleted" if state.deleted else "already_exists"
            return Rejection(code, f"{collection}.{doc_id} already exists with another body or links",
                             {"document": f"{collection}.{doc_id}"})
        return []  # creating it again as it is changes nothing
    broken = check_document(local_collection(collection), None, body)
    if not ctx.require(f"the body keeps the rules of {local_collection(collection)}", broken is None):
        assert broken is not None
        return Rejection(broken.code, broken.message, broken.details)
    return [DocumentCreated(collection, doc_id, body, dict(command.links), ctx.actor)]


def _patch(state: Document, command: PatchDocument, ctx: Context) -> list[DocumentEvent] | Rejection:
    after = merge_patch(state.body, command.patch)
    if after == state.body:
        return []  # the patch is already in the body: nothing to record
    broken = check_document(local_collection(state.collection), state.body, after)
    if not ctx.require(f"the patched body keeps the rules of {local_collection(state.collection)}", broken is None):
        assert broken is not None
        return Rejection(broken.code, broken.message, broken.details)
    return [DocumentPatched(command.patch, ctx.actor)]
