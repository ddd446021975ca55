"""Agent runs, for both clients: the list, a run, its changes and effects, and its rollback.

The runs are read from the server's audit trail (``GET /v1/runs`` …); a rollback is
``POST /v1/runs/{run_id}/rollback``, planned only with ``dry_run=True``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from blackboard_client import _routes as r

OnConflict = Literal["skip", "overwrite"]


def _runs(filters: dict[str, Any], page_size: int) -> r.Pager:
    return r.Pager(r.get("/v1/runs", **filters), page_size=page_size)


def _run(run_id: str, part: str = "") -> r.Call:
    return r.get(f"/v1/runs/{r.seg(run_id)}{part}")


def _rollback(run_id: str, dry_run: bool, on_conflict: OnConflict) -> r.Call:
    return r.Call("POST", f"/v1/runs/{r.seg(run_id)}/rollback", json={"dry_run": dry_run, "on_conflict": on_conflict},
                  read=False)


class SyncRuns:
    """The run methods of ``Client`` (``_call`` and ``_pages`` come from it)."""

    def _call(self, call: r.Call, consistent_with: str | None = None) -> Any:
        raise NotImplementedError

    def _pages(self, pager: r.Pager, consistent_with: str | None = None) -> Iterator[Any]:
        raise NotImplementedError

    def runs(self, *, page_size: int = 100, consistent_with: str | None = None,
             **filters: Any) -> Iterator[dict[str, Any]]:
        """Agent runs, the one active last first; filters: ``model``, ``principal``, ``since``, ``until``, ``sort``."""
        return self._pages(_runs(filters, page_size), consistent_with)

    def run(self, run_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        """One run: models, principals, times, counts by type and outcome, streams, money."""
        return self._call(_run(run_id), consistent_with)  # type: ignore[no-any-return]

    def run_changes(self, run_id: str, *, page_size: int = 100,
                    consistent_with: str | None = None) -> Iterator[dict[str, Any]]:
        """The run's events in log order, each with its field diffs."""
        return self._pages(r.Pager(_run(run_id, "/changes"), page_size=page_size), consistent_with)

    def run_effects(self, run_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        """The events that followed from the run's events, each with its causation chain."""
        return self._call(_run(run_id, "/effects"), consistent_with)  # type: ignore[no-any-return]

    def rollback(self, run_id: str, *, dry_run: bool = False, on_conflict: OnConflict = "skip") -> dict[str, Any]:
        """Take the run back with compensating commands; with ``dry_run`` only the plan is answered."""
        return self._call(_rollback(run_id, dry_run, on_conflict))  # type: ignore[no-any-return]


class AsyncRuns:
    """The run methods of ``AsyncClient`` (``_call`` and ``_pages`` come from it)."""

    async def _call(self, call: r.Call, consistent_with: str | None = None) -> Any:
        raise NotImplementedError

    def _pages(self, pager: r.Pager, consistent_with: str | None = None) -> AsyncIterator[Any]:
        raise NotImplementedError

    def runs(self, *, page_size: int = 100, consistent_with: str | None = None,
             **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """See ``Client.runs``."""
        return self._pages(_runs(filters, page_size), consistent_with)

    async def run(self, run_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return await self._call(_run(run_id), consistent_with)  # type: ignore[no-any-return]

    def run_changes(self, run_id: str, *, page_size: int = 100,
                    consistent_with: str | None = None) -> AsyncIterator[dict[str, Any]]:
        return self._pages(r.Pager(_run(run_id, "/changes"), page_size=page_size), consistent_with)

    async def run_effects(self, run_id: str, *, consistent_with: str | None = None) -> dict[str, Any]:
        return await self._call(_run(run_id, "/effects"), consistent_with)  # type: ignore[no-any-return]

    async def rollback(self, run_id: str, *, dry_run: bool = False,
                       on_conflict: OnConflict = "skip") -> dict[str, Any]:
        """See ``Client.rollback``."""
        return await self._call(_rollback(run_id, dry_run, on_conflict))  # type: ignore[no-any-return]
