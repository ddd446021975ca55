"""Every read of the HTTP API, for ``Client``: one method each; lists are iterators that follow the cursors.

Each read waits for the client's session token (the positions of its own accepted commands), or for
``consistent_with`` when given, so a read after a ``send`` sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from blackboard_client import _routes as r
from blackboard_client.models import BatchResult, Checkpoint


class SyncReads:
    """The read methods of ``Client`` (``_call`` and ``_pages`` come from it)."""

    def _call(self, call: r.Call, consistent_with: str | None = None) -> Any:
        raise NotImplementedError

    def _pages(self, pager: r.Pager, consistent_with: str | None = None) -> Iterator[Any]:
        raise NotImplementedError

    # ── projects ──
    def project(self, project_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        """A project with its budget, spec, DNA bank and shots."""
        return self._call(r.project(project_id), consistent_with)  # type: ignore[no-any-return]

    def projects(self, *, sort: str | None = None, fields: str | None = None, page_size: int = 100,
                 consistent_with: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Project summaries; filters: ``status``, ``title``, ``currency``, ``created_after``, …"""
        return self._pages(r.projects(sort, fields, filters, page_size), consistent_with)

    def budget(self, project_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.project_part(project_id, "budget"), consistent_with)  # type: ignore[no-any-return]

    def spec(self, project_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.project_part(project_id, "spec"), consistent_with)  # type: ignore[no-any-return]

    def dna(self, project_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.project_part(project_id, "dna"), consistent_with)  # type: ignore[no-any-return]

    def shot(self, project_id: str, shot_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.shot(project_id, shot_id), consistent_with)  # type: ignore[no-any-return]

    def shots(self, project_id: str, *, sort: str | None = None, fields: str | None = None, page_size: int = 100,
              consistent_with: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """A project's shots; filters: ``status``, ``scene``, ``field.<name>`` (pass as ``**{"field.x": v}``)."""
        return self._pages(r.shots(project_id, sort, fields, filters, page_size), consistent_with)

    def get_shots(self, project_id: str, ids: list[str], *, fields: list[str] | None = None,
                  consistent_with: str | None = None) -> BatchResult:
        """Up to 500 shots by id in one request, in the order asked; ``missing`` names those that do not exist."""
        found = self._call(r.shots_batch(project_id, ids, fields), consistent_with)
        return BatchResult(found["items"], found["missing"])

    def artifacts(self, project_id: str, *, sort: str | None = None, fields: str | None = None,
                  page_size: int = 100, consistent_with: str | None = None,
                  **filters: Any) -> Iterator[dict[str, Any]]:
        return self._pages(r.artifacts(project_id, sort, fields, filters, page_size), consistent_with)

    # ── tasks, nodes, sagas, leases ──
    def task(self, task_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.task(task_id), consistent_with)  # type: ignore[no-any-return]

    def tasks(self, *, sort: str | None = None, fields: str | None = None, page_size: int = 100,
              consistent_with: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Tasks; filters: ``status``, ``name``, ``type``, ``user``, ``parent``, ``node``, ``priority_min``, …"""
        return self._pages(r.tasks(sort, fields, filters, page_size), consistent_with)

    def task_stats(self, *, window_seconds: int = 3600, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.get("/v1/task-stats", window_seconds=window_seconds),  # type: ignore[no-any-return]
                          consistent_with)

    def nodes(self, *, status: str | None = None, skill: str | None = None, available: bool = False,
              consistent_with: str | None = None) -> list[dict[str, Any]]:
        found = self._call(r.get("/v1/nodes", status=status, skill=skill, available=available or None),
                           consistent_with)
        return list(found["items"])

    def node(self, node_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.get(f"/v1/nodes/{r.seg(node_id)}"), consistent_with)  # type: ignore[no-any-return]

    def saga(self, saga_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return self._call(r.get(f"/v1/sagas/{r.seg(saga_id)}"), consistent_with)  # type: ignore[no-any-return]

    def lease_info(self, name: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        """Who holds the lease, until when, and its fencing token."""
        return self._call(r.get(f"/v1/leases/{r.seg(name)}"), consistent_with)  # type: ignore[no-any-return]

    # ── documents and checkpoints ──
    def document(self, collection: str, doc_id: str, *, include_deleted: bool = False,
                 consistent_with: str | None = None) -> dict[str, Any]:
        call = r.get(f"/v1/collections/{r.seg(collection)}/documents/{r.seg(doc_id)}",
                     include_deleted=include_deleted or None)
        return self._call(call, consistent_with)  # type: ignore[no-any-return]

    def documents(self, collection: str, *, where: dict[str, Any] | None = None, sort: str | None = None,
                  fields: str | None = None, links: dict[str, str] | None = None, include_deleted: bool = False,
                  page_size: int = 100, consistent_with: str | None = None) -> Iterator[dict[str, Any]]:
        """A collection's documents whose body contains ``where`` and whose links match ``links``."""
        pager = r.documents(collection, where, sort, fields, links or {}, include_deleted, page_size)
        return self._pages(pager, consistent_with)

    def checkpoint(self, thread_id: str, seq: int | None = None, *,
                   consistent_with: str | None = None) -> Checkpoint:
        """A checkpoint's bytes: the latest of the thread, or number ``seq``."""
        path = f"/v1/checkpoints/{r.seg(thread_id)}" + (f"/{seq}" if seq is not None else "")
        response = self._call(r.Call("GET", path, raw=True), consistent_with)
        return Checkpoint(int(response.headers["x-checkpoint-seq"]), response.headers["x-checkpoint-sha256"],
                          response.content)

    def checkpoints(self, thread_id: str, *, page_size: int = 100,
                    consistent_with: str | None = None) -> Iterator[dict[str, Any]]:
        """A thread's checkpoints (without their bytes), oldest first."""
        return self._pages(r.checkpoints(thread_id, page_size), consistent_with)

    # ── history and time travel ──
    def history(self, stream: str, *, page_size: int = 100,
                consistent_with: str | None = None) -> Iterator[dict[str, Any]]:
        """A stream's history entries (each with what it changed), oldest first."""
        return self._pages(r.history(stream, page_size), consistent_with)

    def shot_history(self, project_id: str, shot_id: str, *, page_size: int = 100,
                     consistent_with: str | None = None) -> Iterator[dict[str, Any]]:
        return self._pages(r.sub_history(project_id, "shots", shot_id, page_size), consistent_with)

    def artifact_history(self, project_id: str, artifact_id: str, *, page_size: int = 100,
                         consistent_with: str | None = None) -> Iterator[dict[str, Any]]:
        return self._pages(r.sub_history(project_id, "artifacts", artifact_id, page_size), consistent_with)

    def state(self, stream: str, *, version: int | None = None, at: datetime | None = None,
              consistent_with: str | None = None) -> dict[str, Any]:
        """A stream's state at ``version`` or at time ``at`` (the latest without either)."""
        call = r.get(f"/v1/streams/{r.seg(stream)}/state", version=version, at=at)
        return self._call(call, consistent_with)  # type: ignore[no-any-return]

    def shot_state(self, project_id: str, shot_id: str, *, version: int | None = None, at: datetime | None = None,
                   consistent_with: str | None = None) -> dict[str, Any]:
        call = r.get(f"/v1/projects/{r.seg(project_id)}/shots/{r.seg(shot_id)}/state", version=version, at=at)
        return self._call(call, consistent_with)  # type: ignore[no-any-return]

    def outcome_of(self, command_id: str) -> dict[str, Any] | None:
        """What became of a command: its first outcome, ``{"outcome": "pending"}``, or ``None`` if unknown."""
        call = r.Call("GET", f"/v1/commands/{r.seg(command_id)}", read=False, none_on=frozenset({404}))
        return self._call(call)  # type: ignore[no-any-return]
