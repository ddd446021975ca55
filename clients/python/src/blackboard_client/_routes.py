"""The HTTP API's reads as data: for each, the request to make and how its answer is decoded or paged.

Both clients turn a ``Call`` into a request; a ``Pager`` says which query parameter carries the cursor
and which the page size, since the lists differ in those names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: A read (waits for the session's token) or not.
    read: bool = True
    #: Statuses answered without an error (besides 2xx): e.g. 404 for "no such thing" → ``None``.
    none_on: frozenset[int] = frozenset()
    #: Answer the ``httpx.Response`` itself (bytes, headers) instead of its decoded JSON.
    raw: bool = False


@dataclass(frozen=True)
class Pager:
    """A list: its call, the query parameters of the cursor and the page size."""

    call: Call
    cursor: str = "cursor"
    size: str = "page_size"
    page_size: int = 100

    def page(self, cursor: str | None) -> Call:
        params = {**self.call.params, self.size: self.page_size}
        if cursor is not None:
            params[self.cursor] = cursor
        return replace(self.call, params=params)


def seg(value: str) -> str:
    """One path segment, escaped (a stream name holds ``:``; an id may hold ``.``)."""
    return quote(value, safe=":._-~")


def _params(**given: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else (
            ("true" if value else "false") if isinstance(value, bool) else value)
    return out


def get(path: str, **params: Any) -> Call:
    return Call("GET", path, _params(**params))


def project(project_id: str) -> Call:
    return get(f"/v1/projects/{seg(project_id)}")


def project_part(project_id: str, part: str) -> Call:
    return get(f"/v1/projects/{seg(project_id)}/{part}")


def projects(sort: str | None, fields: str | None, filters: dict[str, Any], page_size: int) -> Pager:
    return Pager(get("/v1/projects", sort=sort, fields=fields, **filters), page_size=page_size)


def shot(project_id: str, shot_id: str) -> Call:
    return get(f"/v1/projects/{seg(project_id)}/shots/{seg(shot_id)}")


def shots(project_id: str, sort: str | None, fields: str | None, filters: dict[str, Any], page_size: int) -> Pager:
    return Pager(get(f"/v1/projects/{seg(project_id)}/shots", sort=sort, fields=fields, **filters),
                 page_size=page_size)


def shots_batch(project_id: str, ids: list[str], fields: list[str] | None) -> Call:
    body: dict[str, Any] = {"ids": ids} | ({"fields": fields} if fields is not None else {})
    return Call("POST", f"/v1/projects/{seg(project_id)}/shots/batch-get", json=body)


def artifacts(project_id: str, sort: str | None, fields: str | None, filters: dict[str, Any],
              page_size: int) -> Pager:
    return Pager(get(f"/v1/projects/{seg(project_id)}/artifacts", sort=sort, fields=fields, **filters),
                 page_size=page_size)


def task(task_id: str) -> Call:
    return get(f"/v1/tasks/{seg(task_id)}")


def tasks(sort: str | None, fields: str | None, filters: dict[str, Any], page_size: int) -> Pager:
    return Pager(get("/v1/tasks", sort=sort, fields=fields, **filters), page_size=page_size)


def documents(collection: str, where: dict[str, Any] | None, sort: str | None, fields: str | None,
              links: dict[str, str], include_deleted: bool, page_size: int) -> Pager:
    import json

    params = _params(where=json.dumps(where) if where is not None else None, sort=sort, fields=fields,
                     include_deleted=include_deleted or None) | {f"link.{k}": v for k, v in links.items()}
    return Pager(Call("GET", f"/v1/collections/{seg(collection)}/documents", params), size="limit",
                 page_size=page_size)


def history(stream: str, page_size: int) -> Pager:
    return Pager(get(f"/v1/streams/{seg(stream)}/history"), page_size=page_size)


def sub_history(project_id: str, kind: str, ident: str, page_size: int) -> Pager:
    return Pager(get(f"/v1/projects/{seg(project_id)}/{kind}/{seg(ident)}/history"), page_size=page_size)


def checkpoints(thread_id: str, page_size: int) -> Pager:
    return Pager(get(f"/v1/checkpoints/{seg(thread_id)}/history"), cursor="after_seq", size="limit",
                 page_size=page_size)


def changes(stream: str, after: int) -> Call:
    return get(f"/v1/streams/{seg(stream)}/changes", after=after)


def save_checkpoint(thread_id: str, data: bytes, label: str | None, parent_seq: int | None,
                    metadata: dict[str, Any] | None, command_id: str) -> Call:
    import json

    headers = {"Content-Type": "application/octet-stream", "Idempotency-Key": command_id}
    if metadata is not None:
        headers["X-Checkpoint-Metadata"] = json.dumps(metadata, separators=(",", ":"))
    return Call("PUT", f"/v1/checkpoints/{seg(thread_id)}", _params(label=label, parent_seq=parent_seq),
                content=data, headers=headers, read=False, raw=True)


def restore_checkpoint(thread_id: str, seq: int, label: str | None, command_id: str) -> Call:
    body = {"seq": seq} | ({"label": label} if label is not None else {})
    return Call("POST", f"/v1/checkpoints/{seg(thread_id)}/restore", json=body,
                headers={"Idempotency-Key": command_id}, read=False, raw=True)
