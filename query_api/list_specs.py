"""What can be listed: one ``ListSpec`` per resource (its table, sort keys, filters and fields), a whitelist
from which every SQL fragment of a list comes (``blackboard.query_api.lists``).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

import msgspec

from blackboard.projector.documents import PROJECT_VIEW_COLUMNS
from blackboard.schemas.project import ProjectStatus
from blackboard.schemas.task import TaskStatus

MAX_PAGE_SIZE = 500
MAX_FIELDS = 100
KeyType = Literal["text", "int", "timestamp"]
Operator = Literal["=", ">=", "<=", ">", "<"]

CAST: dict[str, str] = {"text": "text", "int": "bigint", "timestamp": "timestamptz"}
#: A dynamic field's name: an identifier, so that it reads the same in a URL, a cursor and an error.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: One segment of a ``fields=`` dot path.
SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class SortKey(msgspec.Struct, frozen=True):
    """A sortable key: its SQL expression (from the spec, never from a client) and its type."""

    sql: str
    type: KeyType


class Filter(msgspec.Struct, frozen=True):
    """An allowed filter: ``<sql> <op> $n`` with the value converted to ``type``."""

    sql: str
    op: Operator
    type: KeyType
    choices: frozenset[str] | None = None


class DynamicField(msgspec.Struct, frozen=True):
    """Keys named ``<prefix><identifier>`` (``field.scene``), sortable as text and filterable by equality.

    ``sort_sql`` and ``filter_sql`` hold ``{name}``, replaced by the ``$n`` parameter carrying the name.
    """

    prefix: str
    sort_sql: str
    filter_sql: str


class ListSpec(msgspec.Struct, frozen=True):
    """One listable resource.

    ``scope`` is a fixed condition over the handler's own parameters ``$1..$scope_params`` (a
    project's shots: ``project_id = $1``). ``id_key`` names the sort key that is unique within the
    scope; it is appended to every sort so that the order, and so the keyset, is total. ``fields``
    lists the top-level fields of the documents (``None``: open documents whose fields vary by row).
    """

    resource: str
    source: str
    scope: str
    scope_params: int
    sort_keys: dict[str, SortKey]
    filters: dict[str, Filter]
    id_key: str
    default_sort: str
    fields: frozenset[str] | None
    dynamic: DynamicField | None = None
    #: The column holding each row's stored id, whose prefix names its tenant (``schemas/tenancy.py``): every page
    #: is confined to the caller's tenant by it. ``None`` where ``scope`` already names a stored id (a project's
    #: shots), which confines it as well.
    tenant_key: str | None = None


class Key(msgspec.Struct, frozen=True):
    """A resolved key: its name as the client wrote it, its SQL and type, and a dynamic field's name."""

    name: str
    sql: str
    type: KeyType
    arg: str | None = None


class SortTerm(msgspec.Struct, frozen=True):
    key: Key
    desc: bool


class FilterTerm(msgspec.Struct, frozen=True):
    key: Key
    op: Operator
    value: Any


class ListQuery(msgspec.Struct, frozen=True):
    """A parsed list request; ``after`` holds the sort values of the last row of the previous page."""

    sort: tuple[SortTerm, ...]
    filters: tuple[FilterTerm, ...]
    page_size: int
    after: tuple[Any, ...] | None
    fields: tuple[str, ...] | None
    fingerprint: str


TASKS = ListSpec(
    resource="tasks",
    source="tasks",
    tenant_key="id",
    scope="TRUE",
    scope_params=0,
    sort_keys={
        "id": SortKey("id", "text"),
        "created_at": SortKey("created_at", "timestamp"),
        "updated_at": SortKey("updated_at", "timestamp"),
        "priority": SortKey("priority", "int"),
        "name": SortKey("name", "text"),
        "status": SortKey("status", "text"),
    },
    filters={
        "status": Filter("status", "=", "text", frozenset(get_args(TaskStatus))),
        "name": Filter("name", "=", "text"),
        "priority_min": Filter("priority", ">=", "int"),
        "priority_max": Filter("priority", "<=", "int"),
        "created_after": Filter("created_at", ">", "timestamp"),
        "created_before": Filter("created_at", "<", "timestamp"),
        "updated_after": Filter("updated_at", ">", "timestamp"),
        "type": Filter("type", "=", "text"),
        "user": Filter("user_id", "=", "text"),
        "parent": Filter("parent", "=", "text"),
        "node": Filter("node", "=", "text"),
    },
    id_key="id",
    default_sort="created_at",
    fields=frozenset({"id", "name", "priority", "payload", "status", "version", "created_at", "updated_at", "type",
                      "user", "parent", "required_skills", "depends_on", "node", "token", "lease_expires_at",
                      "attempts", "max_attempts", "not_before", "progress", "error", "finished_at"}),
)

SHOTS = ListSpec(
    resource="shots",
    source="shots",
    scope="project_id = $1",
    scope_params=1,
    sort_keys={
        "id": SortKey("shot_id", "text"),
        "version": SortKey("version", "int"),
        "updated_at": SortKey("updated_at", "timestamp"),
    },
    filters={
        "status": Filter("fields->>'status'", "=", "text"),
        "scene": Filter("fields->>'scene'", "=", "text"),
    },
    id_key="id",
    default_sort="id",
    fields=None,
    # A shot without the field sorts as '' so that the keyset comparison never meets a NULL.
    dynamic=DynamicField("field.", sort_sql="coalesce(fields->>{name}, '')", filter_sql="fields->>{name}"),
)


PROJECTS = ListSpec(
    resource="projects",
    tenant_key="id",
    # Every column but the decider's ``state``: a list never needs it, and it is the largest.
    source=f"(SELECT {PROJECT_VIEW_COLUMNS} FROM projects) AS projects",
    scope="TRUE",
    scope_params=0,
    sort_keys={
        "id": SortKey("id", "text"),
        "title": SortKey("title", "text"),
        "status": SortKey("status", "text"),
        "created_at": SortKey("created_at", "timestamp"),
        "updated_at": SortKey("updated_at", "timestamp"),
    },
    filters={
        "status": Filter("status", "=", "text", frozenset(get_args(ProjectStatus))),
        "title": Filter("title", "=", "text"),
        "currency": Filter("currency", "=", "text"),
        "created_after": Filter("created_at", ">", "timestamp"),
        "created_before": Filter("created_at", "<", "timestamp"),
        "updated_after": Filter("updated_at", ">", "timestamp"),
    },
    id_key="id",
    default_sort="id",
    fields=frozenset({"id", "title", "status", "currency", "budget", "spec_version", "version", "created_at",
                      "updated_at"}),
)

ARTIFACTS = ListSpec(
    resource="artifacts",
    source="artifacts",
    scope="project_id = $1",
    scope_params=1,
    sort_keys={
        "id": SortKey("artifact_id", "text"),
        "kind": SortKey("kind", "text"),
        "created_at": SortKey("created_at", "timestamp"),
        "version": SortKey("version", "int"),
    },
    filters={
        "kind": Filter("kind", "=", "text"),
        "shot_id": Filter("shot_id", "=", "text"),
        "task_id": Filter("task_id", "=", "text"),
        "created_by": Filter("created_by", "=", "text"),
        "created_after": Filter("created_at", ">", "timestamp"),
        "created_before": Filter("created_at", "<", "timestamp"),
    },
    id_key="id",
    default_sort="created_at",
    fields=frozenset({"project_id", "artifact_id", "kind", "uri", "params", "cost", "shot_id", "task_id",
                      "reservation_id", "created_by", "created_at", "version"}),
)
