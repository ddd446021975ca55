"""``blackboard runs``: agent runs read from a running service over HTTP, and their rollback.

Each command asks the routes of ``docs/runs.md`` and prints their JSON answer on stdout (``list`` may
also print a table); a refused request prints its code and message on stderr and exits with 1.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import cyclopts
import msgspec
from rich.console import Console
from rich.markup import escape

from blackboard.cli.base import Format, ServerUrl, app, console, server_url, table

runs_app = cyclopts.App(name="runs", help="Agent runs: what each changed, what followed, and its rollback.")
app.command(runs_app)

Url = ServerUrl
ApiKey = Annotated[str | None, cyclopts.Parameter(env_var="BLACKBOARD_API_KEY")]


async def _call(method: str, url: str | None, path: str, api_key: str | None, *, params: dict[str, Any] | None = None,
                body: dict[str, Any] | None = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(headers=headers, timeout=60.0) as client:
        response = await client.request(method, server_url(url) + path, params=params, json=body)
    if response.status_code != 200:
        try:
            error = response.json()
            console.print(f"[red]{response.status_code} {escape(str(error.get('code')))}: "
                          f"{escape(str(error.get('detail') or error.get('message')))}[/]")
        except ValueError:
            console.print(f"[red]{response.status_code} {escape(response.text[:200])}[/]")
        raise SystemExit(1)
    return response.json()


def _print(doc: Any) -> None:
    sys.stdout.write(msgspec.json.encode(doc).decode() + "\n")


@runs_app.command(name="list")
async def list_runs(*, model: str | None = None, principal: str | None = None, since: str | None = None,
                    until: str | None = None, page_size: int = 50, cursor: str | None = None,
                    url: Url = None, api_key: ApiKey = None, format: Format = "text") -> None:
    """The runs, the one active last first; one page (its next cursor is printed after the table)."""
    given = {"model": model, "principal": principal, "since": since, "until": until, "cursor": cursor,
             "page_size": page_size}
    page = await _call("GET", url, "/v1/runs", api_key, params={k: v for k, v in given.items() if v is not None})
    if format == "json":
        _print(page)
        return
    shown = table("agent runs", "run", "model", "principal", "first at", "last at", "events", "commands")
    for r in page["items"]:
        shown.add_row(*(escape(str(r.get(k))) for k in ("id", "model", "principal", "first_at", "last_at",
                                                         "events", "commands")))
    Console(highlight=False).print(shown)
    if page.get("next_cursor"):
        console.print(f"next page: --cursor {page['next_cursor']}")


@runs_app.command(name="show")
async def show_run(run_id: str, *, url: Url = None, api_key: ApiKey = None) -> None:
    """One run: models, principals, times, counts by type and outcome, streams, money."""
    _print(await _call("GET", url, f"/v1/runs/{run_id}", api_key))


@runs_app.command(name="changes")
async def run_changes(run_id: str, *, page_size: int = 100, cursor: str | None = None, url: Url = None,
                      api_key: ApiKey = None) -> None:
    """A page of the run's events in log order, with their field diffs."""
    params: dict[str, Any] = {"page_size": page_size} | ({"cursor": cursor} if cursor else {})
    _print(await _call("GET", url, f"/v1/runs/{run_id}/changes", api_key, params=params))


@runs_app.command(name="effects")
async def run_effects(run_id: str, *, url: Url = None, api_key: ApiKey = None) -> None:
    """The events that followed from the run's events, each with its causation chain."""
    _print(await _call("GET", url, f"/v1/runs/{run_id}/effects", api_key))


@runs_app.command(name="rollback")
async def rollback_run(run_id: str, *, dry_run: bool = False,
                       on_conflict: Literal["skip", "overwrite"] = "skip",
                       url: Url = None, api_key: ApiKey = None) -> None:
    """Take the run back with compensating commands; ``--dry-run`` prints the plan and sends nothing."""
    body = {"dry_run": dry_run, "on_conflict": on_conflict}
    _print(await _call("POST", url, f"/v1/runs/{run_id}/rollback", api_key, body=body))
