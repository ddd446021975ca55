"""Document commands and events, and the rules of the known collections.

A document is a JSON object in a named collection (``reviews``, ``corrections``, ``evaluations``
or any other), on its own stream ``doc:<collection>.<doc_id>``, changed by RFC 7396 merge patches
under optimistic concurrency. A new kind of document needs no code: a collection without rules
takes any JSON object. The three known collections have the rules of ``COLLECTION_RULES``; a
document that would break them is refused before anything is appended.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from blackboard.schemas.tenancy import split_id
from blackboard.schemas.types import Identifier, ShortText

#: A collection name: lower case, starting with a letter, no '.' (the '.' ends it in the stream id).
COLLECTION_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"
_COLLECTION = re.compile(COLLECTION_PATTERN.removesuffix("$") + r"\Z")

#: The name of a link (``task_id``, ``project_id``): what a list filters on as ``link.<name>``.
LinkName = Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}(?!\n)$",
                                       description="a letter or '_' then up to 62 letters, digits or '_'")]
LinkValue = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Links = Annotated[dict[LinkName, LinkValue], msgspec.Meta(max_length=32)]


class CreateDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``doc.create``: the document ``body``, and ``links`` to what it is about (``task_id``, ``project_id``…).

    Creating a document again with the same body and links changes nothing; with others it is
    refused (``already_exists``).
    """

    body: dict[str, Any]
    links: Links = {}


class PatchDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``doc.patch``: merge-patch (RFC 7396) the body; ``null`` removes a key. Pass the document's
    ``version`` as the envelope's ``expected_version`` to refuse a patch over a change not seen."""

    patch: dict[str, Any]


class DeleteDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``doc.delete``: mark the document deleted; it stays in the log and in history."""

    reason: ShortText | None = None


class DocumentCreated(msgspec.Struct, frozen=True):
    collection: str
    doc_id: str
    body: dict[str, Any]
    links: dict[str, str]
    by: str


class DocumentPatched(msgspec.Struct, frozen=True):
    """Only the patch travels: the body it produces is the fold of the stream."""

    patch: dict[str, Any]
    by: str


class DocumentDeleted(msgspec.Struct, frozen=True):
    by: str
    reason: str | None = None


DocumentCommand = CreateDocument | PatchDocument | DeleteDocument
DocumentEvent = DocumentCreated | DocumentPatched | DocumentDeleted


# ── stream ids ─────────────────────────────────────────────────────────────────────────


def local_collection(stored: str) -> str:
    """A stored collection as its tenant named it: ``acme~reviews`` → ``reviews`` (``reviews`` unchanged)."""
    return split_id(stored)[1]


def is_collection(name: str) -> bool:
    """Whether ``name`` is a well-formed collection name."""
    return _COLLECTION.match(name) is not None


def split_document_id(ident: str) -> tuple[str, str] | None:
    """``reviews.r-1`` → ``("reviews", "r-1")``; ``None`` when the collection or the doc id is malformed.

    A tenant's stored id (``acme~reviews.r-1``, see ``schemas/tenancy.py``) gives its collection as stored,
    ``("acme~reviews", "r-1")``: the documents of a tenant are in its own collections, and the id stays
    ``<collection>.<doc_id>``. ``local_collection`` is the name its tenant gave (whose rules apply).
    """
    collection, sep, doc_id = ident.partition(".")
    if not sep or not doc_id or not is_collection(local_collection(collection)):
        return None
    try:
        msgspec.convert(doc_id, Identifier)
    except msgspec.ValidationError:
        return None
    return collection, doc_id


# ── rules of the known collections ─────────────────────────────────────────────────────


class RuleViolation(msgspec.Struct, frozen=True):
    """Why a body breaks its collection's rules: ``code`` (``invalid_document`` or ``illegal_transition``)."""

    code: str
    message: str
    details: dict[str, Any] = {}


BodyCheck = Callable[[dict[str, Any]], RuleViolation | None]
ChangeCheck = Callable[[dict[str, Any] | None, dict[str, Any]], RuleViolation | None]


@dataclass(frozen=True, slots=True)
class CollectionRules:
    """The rules of one collection: ``body`` holds for every version of a document; ``change`` for
    every step from one version to the next (``None`` before: the document is being created)."""

    summary: str
    body: BodyCheck
    change: ChangeCheck | None = None
    #: Fields a create without them gets (a review starts ``awaiting_review``).
    defaults: dict[str, Any] | None = None


def _invalid(collection: str, field: str, expected: str, body: dict[str, Any]) -> RuleViolation:
    got = body.get(field, None)
    shown = "nothing" if field not in body else msgspec.json.encode(got).decode()[:80]
    return RuleViolation("invalid_document", f"{collection}: body.{field} must be {expected}, got {shown}",
                         {"collection": collection, "path": f"$.body.{field}", "expected": expected})


def _text(body: dict[str, Any], field: str) -> bool:
    return isinstance(body.get(field), str)


def _optional_text(body: dict[str, Any], field: str) -> bool:
    return field not in body or _text(body, field)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


REVIEW_STATUSES = ("awaiting_review", "approved", "rejected")
#: A review's status moves only forward, once: awaiting review → approved or rejected.
REVIEW_TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({"awaiting_review"}),
    "awaiting_review": frozenset({"approved", "rejected"}),
    "approved": frozenset(),
    "rejected": frozenset(),
}


def _review_body(body: dict[str, Any]) -> RuleViolation | None:
    if body.get("status") not in REVIEW_STATUSES:
        return _invalid("reviews", "status", "one of " + ", ".join(REVIEW_STATUSES), body)
    for field in ("reviewer", "notes"):
        if not _optional_text(body, field):
            return _invalid("reviews", field, "a string when given", body)
    return None


def _review_change(before: dict[str, Any] | None, after: dict[str, Any]) -> RuleViolation | None:
    old = None if before is None else before.get("status")
    new = after.get("status")
    if old == new:
        return None
    allowed = REVIEW_TRANSITIONS.get(old, frozenset())
    if new in allowed:
        return None
    return RuleViolation("illegal_transition", f"a review moves from {old or 'creation'} only to "
                                               f"{', '.join(sorted(allowed)) or 'nothing'}, not to {new}",
                         {"from": old, "to": new, "allowed": sorted(allowed)})


def _correction_body(body: dict[str, Any]) -> RuleViolation | None:
    for field in ("task_id", "guidance"):
        if not _text(body, field):
            return _invalid("corrections", field, "a string", body)
    return None


def _evaluation_body(body: dict[str, Any]) -> RuleViolation | None:
    scores = body.get("scores")
    if not isinstance(scores, dict) or not all(_number(v) for v in scores.values()):
        return _invalid("evaluations", "scores", "an object of criterion → finite number", body)
    if not _optional_text(body, "task_id"):
        return _invalid("evaluations", "task_id", "a string when given", body)
    return None


#: The collections with rules; any other collection takes any JSON object as its body.
COLLECTION_RULES: dict[str, CollectionRules] = {
    "reviews": CollectionRules(
        "quality checkpoints: status awaiting_review → approved | rejected; optional reviewer and notes (strings)",
        _review_body, _review_change, {"status": "awaiting_review"}),
    "corrections": CollectionRules("guidance attached to a task: task_id and guidance (strings) required",
                                   _correction_body),
    "evaluations": CollectionRules("scores per criterion: scores (criterion → finite number); optional task_id",
                                   _evaluation_body),
}


def with_defaults(collection: str, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its collection's defaults for the fields it lacks (what a create stores)."""
    rules = COLLECTION_RULES.get(collection)
    if rules is None or not rules.defaults:
        return body
    return {**rules.defaults, **body}


def check_document(collection: str, before: dict[str, Any] | None, after: dict[str, Any]) -> RuleViolation | None:
    """The rule of ``collection`` that the step from ``before`` (``None``: creation) to ``after`` breaks, if any."""
    rules = COLLECTION_RULES.get(collection)
    if rules is None:
        return None
    broken = rules.body(after)
    if broken is None and rules.change is not None:
        broken = rules.change(before, after)
    return broken
