"""The gRPC query service's ``.proto``, generated from the msgspec Structs (never hand-copied).

``python -m blackboard.schemas.protogen > schemas/proto/blackboard/query/v1/query.proto`` regenerates
the committed file; a test fails when the two differ. The service is declared once, in ``QUERY_SERVICE``
below: an RPC is a name, a request Struct and a response Struct, and its messages follow from them.

Type mapping (``msgspec.inspect`` types → proto3):

* ``str`` → ``string``, ``int`` → ``int64``, ``bool`` → ``bool``, ``float`` → ``double``, ``bytes`` →
  ``bytes``; a ``Literal`` of strings or ints → ``string`` / ``int64``.
* ``Decimal`` → ``string``: money stays exact, written as the HTTP API writes it.
* ``datetime`` → ``google.protobuf.Timestamp``: every gRPC language gets its native time type, the
  Timestamp's JSON mapping is RFC 3339 (so the HTTP document converts as it is), and its nanoseconds
  hold PostgreSQL's microseconds without loss. ``date``/``time``/``UUID`` → ``string``.
* ``Any`` → ``google.protobuf.Value``; ``dict[str, Any]`` → ``google.protobuf.Struct``.
* ``list[T]`` (and sets, variadic tuples) → ``repeated T``; ``dict[str, T]`` → ``map<string, T>``.
* a nested Struct → a message of the Struct's class name.
* ``T | None`` → ``optional T`` for scalars. Messages, repeated and map fields carry no ``optional``:
  a message already has presence, and an empty list or map is how proto3 says "none".

Field numbers are the 1-based position of the field in the Struct, so they are stable as long as
fields are only ever APPENDED. A new field must therefore come last: give it a default (msgspec puts
fields with defaults after those without; append after the existing defaults) or make the Struct
``kw_only``. Removing or reordering a field renumbers the fields after it and breaks every client
compiled against the old file; to retire a field, leave it in the Struct instead.

Note: the proto field name is the field's JSON name (``encode_name``), so that
``google.protobuf.json_format.Parse`` turns the HTTP document into the message field by field.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import msgspec.inspect as mi

from blackboard.schemas.runs import RunChanges, RunEffects, RunSummary
from blackboard.schemas.views import ArtifactView, BudgetView, HistoryEntry, ProjectView, StreamState, TaskView

#: The proto package, and the file's path under ``schemas/proto`` (the path mirrors the package).
PACKAGE = "blackboard.query.v1"
PROTO_PATH = "blackboard/query/v1/query.proto"
#: Largest page a list RPC serves; the same bound as the HTTP API's ``page_size``.
MAX_PAGE_SIZE = 500

_SCALARS: dict[type[mi.Type], str] = {
    mi.StrType: "string", mi.IntType: "int64", mi.BoolType: "bool", mi.FloatType: "double",
    mi.BytesType: "bytes", mi.ByteArrayType: "bytes", mi.MemoryViewType: "bytes",
    mi.DecimalType: "string", mi.DateType: "string", mi.TimeType: "string", mi.UUIDType: "string",
    mi.TimeDeltaType: "string",
}
_TIMESTAMP, _VALUE, _STRUCT = "google.protobuf.Timestamp", "google.protobuf.Value", "google.protobuf.Struct"
_IMPORTS = {_TIMESTAMP: "google/protobuf/timestamp.proto", _VALUE: "google/protobuf/struct.proto",
            _STRUCT: "google/protobuf/struct.proto"}


# ── The query service ─────────────────────────────────────────────────────────────────────────────

EntityId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")]
PageSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE_SIZE)]
TaskStatusFilter = Literal["pending", "claimed", "running", "succeeded", "failed", "cancelled"]


class GetProjectRequest(msgspec.Struct, frozen=True):
    """A project with its budget and shots. ``consistent_with``: a command's position to wait for."""

    project_id: EntityId
    consistent_with: str | None = None


class GetTaskRequest(msgspec.Struct, frozen=True):
    """A task. ``consistent_with``: a command's position to wait for."""

    task_id: EntityId
    consistent_with: str | None = None


class ListTasksRequest(msgspec.Struct, frozen=True):
    """Tasks, oldest first unless ``sort`` says otherwise (as HTTP's ``sort``: keys, '-' for descending).

    ``page_size`` 0 (unset) means 50; ``cursor`` is the previous page's ``next_cursor``.
    """

    status: TaskStatusFilter | None = None
    page_size: PageSize = 50
    cursor: str | None = None
    consistent_with: str | None = None
    sort: str | None = None


class TaskPage(msgspec.Struct, frozen=True):
    """A page of tasks; pass ``next_cursor`` back as ``cursor`` for the next one (unset on the last)."""

    items: list[TaskView]
    next_cursor: str | None = None


class GetHistoryRequest(msgspec.Struct, frozen=True):
    """The audit trail of ``stream`` ('<category>:<id>') after ``after_version``; ``page_size`` 0 means 100."""

    stream: Annotated[str, msgspec.Meta(min_length=3, max_length=300)]
    after_version: Annotated[int, msgspec.Meta(ge=0, le=2**53)] = 0
    page_size: PageSize = 100
    consistent_with: str | None = None


class HistoryPage(msgspec.Struct, frozen=True):
    """A page of a stream's history; ``next_cursor`` is the last version on the page, as a string."""

    items: list[HistoryEntry]
    next_cursor: str | None = None


class GetBudgetRequest(msgspec.Struct, frozen=True):
    """A project's budget and the reservations holding money."""

    project_id: EntityId
    consistent_with: str | None = None


class BatchGetShotsRequest(msgspec.Struct, frozen=True):
    """Up to 500 shots of a project by id, in the order asked; the unknown ones come back in ``missing``."""

    project_id: EntityId
    ids: Annotated[list[str], msgspec.Meta(max_length=500)]
    consistent_with: str | None = None


class ShotBatch(msgspec.Struct, frozen=True):
    """Each shot is its fields plus ``id`` and ``version``: an open document."""

    items: list[dict[str, Any]]
    missing: list[str]


class ListArtifactsRequest(msgspec.Struct, frozen=True):
    """A project's artifacts, filtered by ``kind``/``shot_id``/``task_id`` and sorted as HTTP's ``sort``."""

    project_id: EntityId
    kind: str | None = None
    shot_id: str | None = None
    task_id: str | None = None
    sort: str | None = None
    page_size: PageSize = 50
    cursor: str | None = None
    consistent_with: str | None = None


class ArtifactPage(msgspec.Struct, frozen=True):
    items: list[ArtifactView]
    next_cursor: str | None = None


class GetStateAtRequest(msgspec.Struct, frozen=True):
    """A stream's state after ``version``, or at ``at`` (RFC 3339); the latest with neither."""

    stream: Annotated[str, msgspec.Meta(min_length=3, max_length=300)]
    version: Annotated[int, msgspec.Meta(ge=1, le=2**53)] | None = None
    at: datetime | None = None
    consistent_with: str | None = None


class GetRunRequest(msgspec.Struct, frozen=True):
    """An agent run as the audit trail records it (``GET /v1/runs/{run_id}``)."""

    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
    consistent_with: str | None = None


class GetRunChangesRequest(msgspec.Struct, frozen=True):
    """A page of an agent run's events in log order, with their field diffs; ``page_size`` 0 means 100."""

    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
    page_size: PageSize = 100
    cursor: str | None = None
    consistent_with: str | None = None


class GetRunEffectsRequest(msgspec.Struct, frozen=True):
    """The events that followed from an agent run's events, each with its causation chain."""

    run_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
    consistent_with: str | None = None


class Rpc(msgspec.Struct, frozen=True):
    """One unary RPC: its messages are generated from ``request`` and ``response``."""

    name: str
    request: type[msgspec.Struct]
    response: type[msgspec.Struct]


class Service(msgspec.Struct, frozen=True):
    name: str
    doc: str
    rpcs: tuple[Rpc, ...]

    @property
    def full_name(self) -> str:
        return f"{PACKAGE}.{self.name}"


#: Adding an RPC: one entry here (plus its request Struct above), one handler in ``query_api/grpc.py``,
#: and a regenerated ``.proto``.
QUERY_SERVICE = Service("Query", "The reads of the HTTP query API, as the same documents.", (
    Rpc("GetProject", GetProjectRequest, ProjectView),
    Rpc("GetTask", GetTaskRequest, TaskView),
    Rpc("ListTasks", ListTasksRequest, TaskPage),
    Rpc("GetHistory", GetHistoryRequest, HistoryPage),
    Rpc("GetBudget", GetBudgetRequest, BudgetView),
    Rpc("BatchGetShots", BatchGetShotsRequest, ShotBatch),
    Rpc("ListArtifacts", ListArtifactsRequest, ArtifactPage),
    Rpc("GetStateAt", GetStateAtRequest, StreamState),
    Rpc("GetRun", GetRunRequest, RunSummary),
    Rpc("GetRunChanges", GetRunChangesRequest, RunChanges),
    Rpc("GetRunEffects", GetRunEffectsRequest, RunEffects),
))


# ── The generator ─────────────────────────────────────────────────────────────────────────────────


def render(service: Service = QUERY_SERVICE) -> str:
    """The whole ``.proto`` file of ``service``: header, imports, messages (first use first), service."""
    structs = list(_reachable([t for rpc in service.rpcs for t in (rpc.request, rpc.response)]))
    _check_unique_names(structs)
    messages = [render_message(s) for s in structs]
    used = {_IMPORTS[name] for text in messages for name in _IMPORTS if name in text}
    lines = ["// Generated from the msgspec Structs by `python -m blackboard.schemas.protogen`; do not edit.",
             "// Field numbers follow the Structs' field order: fields are only ever appended.",
             'syntax = "proto3";', "", f"package {PACKAGE};", ""]
    lines += [f'import "{path}";' for path in sorted(used)]
    return "\n".join([*lines, "", *messages, render_service(service)])


def render_message(info: mi.StructType) -> str:
    """One ``message`` block: the Struct's first docstring line as its comment, one line per field."""
    lines = _comment(info.cls.__doc__, indent="")
    lines.append(f"message {info.cls.__name__} {{")
    for number, field in enumerate(info.fields, start=1):
        lines.append(f"  {field_type(field.type, where=f'{info.cls.__name__}.{field.name}')} "
                     f"{field.encode_name} = {number};")
    return "\n".join([*lines, "}", ""])


def render_service(service: Service) -> str:
    lines = _comment(service.doc, indent="")
    lines.append(f"service {service.name} {{")
    for rpc in service.rpcs:
        lines += _comment(rpc.request.__doc__, indent="  ")
        lines.append(f"  rpc {rpc.name}({rpc.request.__name__}) returns ({rpc.response.__name__});")
    return "\n".join([*lines, "}", ""])


def field_type(t: mi.Type, *, where: str) -> str:
    """The proto type of a field, with its ``optional``/``repeated`` label; ``TypeError`` names the field."""
    inner, nullable = _strip_none(t, where=where)
    if isinstance(inner, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return f"repeated {_value_type(inner.item_type, where=where)}"
    if isinstance(inner, mi.DictType) and not _is_json_object(inner):
        if not isinstance(inner.key_type, mi.StrType | mi.IntType):
            raise TypeError(f"{where}: map keys must be str or int, not {inner.key_type!r}")
        return f"map<{_scalar(inner.key_type, where=where)}, {_value_type(inner.value_type, where=where)}>"
    proto = _value_type(inner, where=where)
    scalar = proto in _SCALARS.values()
    return f"optional {proto}" if nullable and scalar else proto


def _value_type(t: mi.Type, *, where: str) -> str:
    """The proto type of one value (a map value or list item, or a singular field)."""
    inner, _ = _strip_none(t, where=where)
    if isinstance(inner, mi.StructType):
        return inner.cls.__name__
    if isinstance(inner, mi.AnyType):
        return _VALUE
    if isinstance(inner, mi.DictType) and _is_json_object(inner):
        return _STRUCT
    if isinstance(inner, mi.DateTimeType):
        return _TIMESTAMP
    if isinstance(inner, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType | mi.DictType):
        raise TypeError(f"{where}: proto3 has no list of lists nor map of maps ({inner!r}); wrap it in a Struct")
    return _scalar(inner, where=where)


def _scalar(t: mi.Type, *, where: str) -> str:
    if isinstance(t, mi.LiteralType):
        kinds = {type(v) for v in t.values}
        if kinds <= {str}:
            return "string"
        if kinds <= {int}:
            return "int64"
        raise TypeError(f"{where}: a Literal must hold only strings or only ints, not {t.values!r}")
    proto = _SCALARS.get(type(t))
    if proto is None:
        raise TypeError(f"{where}: no proto3 mapping for {t!r}")
    return proto


def _strip_none(t: mi.Type, *, where: str) -> tuple[mi.Type, bool]:
    """``T | None`` → ``(T, True)``; a union of several non-None types has no proto3 form."""
    if not isinstance(t, mi.UnionType):
        return t, False
    rest = [m for m in t.types if not isinstance(m, mi.NoneType)]
    if len(rest) != 1:
        raise TypeError(f"{where}: proto3 has no union of {rest!r}; use one type (or Any)")
    return rest[0], len(rest) != len(t.types)


def _is_json_object(t: mi.DictType) -> bool:
    """``dict[str, Any]``: free-form JSON, i.e. ``google.protobuf.Struct``."""
    return isinstance(t.key_type, mi.StrType) and isinstance(t.value_type, mi.AnyType)


def _reachable(roots: Iterable[type[msgspec.Struct]]) -> Iterator[mi.StructType]:
    """Every Struct reachable from ``roots``, depth-first, each once, in order of first use."""
    seen: set[type[Any]] = set()

    def walk(t: mi.Type) -> Iterator[mi.StructType]:
        if isinstance(t, mi.StructType):
            if t.cls in seen:
                return
            seen.add(t.cls)
            yield t
            for field in t.fields:
                yield from walk(field.type)
        elif isinstance(t, mi.UnionType):
            for member in t.types:
                yield from walk(member)
        elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            yield from walk(t.item_type)
        elif isinstance(t, mi.DictType):
            yield from walk(t.value_type)

    for root in roots:
        yield from walk(mi.type_info(root))


def _check_unique_names(structs: list[mi.StructType]) -> None:
    by_name: dict[str, type[Any]] = {}
    for s in structs:
        other = by_name.setdefault(s.cls.__name__, s.cls)
        if other is not s.cls:
            raise ValueError(f"two Structs are named {s.cls.__name__} ({other.__module__}, {s.cls.__module__}); "
                             "a proto message name must be unique")


def _comment(doc: str | None, *, indent: str) -> list[str]:
    """The docstring's first paragraph as ``//`` lines (nothing when there is no docstring)."""
    if not doc:
        return []
    paragraph = doc.strip().split("\n\n")[0]
    return [f"{indent}// {line.strip()}".rstrip() for line in paragraph.splitlines()]


if __name__ == "__main__":
    sys.stdout.write(render())


def meaning(proto: str) -> list[str]:
    """The declarations of a ``.proto`` with each comment reduced to its words (see ``export.meaning``)."""
    lines: list[str] = []
    for line in proto.splitlines():
        code, _, comment = line.partition("//")
        words = " ".join(code.split())
        if words:
            lines.append(words)
        if comment.strip():
            lines.append("// " + " ".join(comment.split()))
    return lines

