"""The ``documents`` read model: one row per ``doc:<collection>.<doc_id>`` stream (see ``projector.tables``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from blackboard.domain import document
from blackboard.schemas.document import DocumentCreated

if TYPE_CHECKING:
    from blackboard.projector.tables import StateTable


def document_columns(state: document.Document) -> dict[str, Any]:
    """The queryable columns of a document's row, derived from its state."""
    return {
        "collection": state.collection, "doc_id": state.doc_id, "body": state.body, "links": state.links,
        "deleted": state.deleted, "created_by": state.created_by, "updated_by": state.updated_by,
    }


def documents_table() -> StateTable:
    """The ``StateTable`` of category ``doc``; its row is keyed by ``<collection>.<doc_id>``.

    Note: a function, not a constant: ``projector.tables`` calls it while it builds ``STATE_TABLES``,
    and importing ``StateTable`` here at module level would make the two modules import each other.
    """
    from blackboard.projector.tables import StateTable

    return StateTable(document.CATEGORY, "documents", "id", document.Document, document.evolve,
                      document.initial_state, document_columns, opener=(DocumentCreated,))
