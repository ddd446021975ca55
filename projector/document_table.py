"""The ``documents`` read model: one row per ``doc:<collection>.<doc_id>`` stream (see ``projector.state_table``)."""

from __future__ import annotations

from typing import Any

from blackboard.domain import document
from blackboard.projector.state_table import StateTable
from blackboard.schemas.document import DocumentCreated


def document_columns(state: document.Document) -> dict[str, Any]:
    """The queryable columns of a document's row, derived from its state."""
    return {
        "collection": state.collection, "doc_id": state.doc_id, "body": state.body, "links": state.links,
        "deleted": state.deleted, "created_by": state.created_by, "updated_by": state.updated_by,
    }


#: The ``StateTable`` of category ``doc`` (in ``projector.tables.STATE_TABLES``); a row is keyed by
#: ``<collection>.<doc_id>``.
DOCUMENTS = StateTable(document.CATEGORY, "documents", "id", document.Document, document.evolve,
                       document.initial_state, document_columns, opener=(DocumentCreated,))
