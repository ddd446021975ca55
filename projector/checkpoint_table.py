"""The read model of checkpoint threads: a row per thread (folded with ``evolve``) and an entry per checkpoint.

The entry of a checkpoint saved inline keeps its stored bytes (``bytea``), so the state and the
row of the thread stay small however many checkpoints it has.
"""

from __future__ import annotations

from typing import Any

from blackboard.domain import checkpoint
from blackboard.projector.state_table import StateTable
from blackboard.schemas.checkpoint import CheckpointSaved
from blackboard.schemas.envelope import Envelope

ENTRIES = "checkpoint_entries"


def thread_columns(state: checkpoint.Thread) -> dict[str, Any]:
    """The derived columns of a thread's row: how many checkpoints, and which is the latest."""
    latest = state.refs[-1] if state.refs else None
    return {
        "latest_seq": len(state.refs), "count": len(state.refs),
        "latest_sha256": latest.sha256 if latest else None, "latest_size": latest.size if latest else None,
        "latest_label": latest.label if latest else None,
    }


def entry_rows(thread_id: str, event: Any, state: checkpoint.Thread, envelope: Envelope
               ) -> list[tuple[str, dict[str, Any]]]:
    """The ``checkpoint_entries`` row of one ``checkpoint.saved`` (insert-only: a replay adds nothing)."""
    if not isinstance(event, CheckpointSaved):
        return []
    ref = state.refs[event.seq - 1]
    return [(ENTRIES, {
        "thread_id": thread_id, "seq": event.seq, "sha256": event.sha256, "size": event.size,
        "stored_size": event.stored_size, "encoding": event.encoding, "inline": event.inline,
        "inline_from": ref.inline_from, "blob": event.blob, "label": event.label, "metadata": event.metadata,
        "parent_seq": event.parent_seq, "restored_from": event.restored_from, "command_id": envelope.command_id,
        "created_at": envelope.occurred_at, "created_by": envelope.actor,
    })]


#: The ``StateTable`` of category ``checkpoint`` (in ``projector.tables.STATE_TABLES``).
CHECKPOINTS = StateTable("checkpoint", "checkpoints", "id", checkpoint.Thread, checkpoint.evolve,
                         checkpoint.initial_state, thread_columns, extra=entry_rows)
