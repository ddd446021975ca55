"""The committed ``.proto`` is what the Structs generate: the gRPC messages cannot drift from the code."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from blackboard.query_api import reads
from blackboard.query_api.grpc import HANDLERS, message_classes
from blackboard.schemas import protogen
from blackboard.schemas.protogen import PROTO_PATH, QUERY_SERVICE, Rpc, Service, render

COMMITTED = Path(__file__).resolve().parents[2] / "schemas" / "proto" / PROTO_PATH


def test_the_committed_proto_is_the_generated_one() -> None:
    # Of meaning: a field changed fails, a comment laid out differently does not (protogen.meaning).
    assert protogen.meaning(COMMITTED.read_text()) == protogen.meaning(render()), (
        f"views changed: run `python -m blackboard.schemas.protogen > schemas/proto/{PROTO_PATH}`")


def test_a_changed_message_fails_the_proto_check_and_a_reflowed_comment_does_not() -> None:
    proto = render()
    assert protogen.meaning(proto.replace("// ", "//   ")) == protogen.meaning(proto)
    field = next(line for line in proto.splitlines() if line.strip().startswith("string ") and "=" in line)
    assert protogen.meaning(proto.replace(field, field.replace("string ", "int64 ", 1))) != protogen.meaning(proto)


class Inner(msgspec.Struct):
    """An inner message."""

    n: int


class Everything(msgspec.Struct):
    """Every mapping at once.

    Only the first paragraph becomes the comment.
    """

    text: str
    count: int
    flag: bool
    ratio: float
    money: Decimal
    at: datetime
    anything: Any
    spec: dict[str, Any]
    tags: list[str]
    inners: dict[str, Inner]
    specs: dict[str, dict[str, Any]]
    maybe: str | None
    inner: Inner | None
    renamed: int = msgspec.field(default=0, name="from")


class Ask(msgspec.Struct):
    id: str


def test_every_type_maps_as_documented() -> None:
    text = render(Service("Probe", "A probe.", (Rpc("Get", Ask, Everything),)))
    body = text.split("message Everything {\n")[1].split("}")[0].splitlines()
    assert body == [
        "  string text = 1;", "  int64 count = 2;", "  bool flag = 3;", "  double ratio = 4;",
        "  string money = 5;", "  google.protobuf.Timestamp at = 6;", "  google.protobuf.Value anything = 7;",
        "  google.protobuf.Struct spec = 8;", "  repeated string tags = 9;", "  map<string, Inner> inners = 10;",
        "  map<string, google.protobuf.Struct> specs = 11;", "  optional string maybe = 12;", "  Inner inner = 13;",
        "  int64 from = 14;"]
    assert "// Every mapping at once.\nmessage Everything" in text and "Only the first" not in text
    assert "message Inner {\n  int64 n = 1;\n}" in text
    assert 'import "google/protobuf/struct.proto";\nimport "google/protobuf/timestamp.proto";' in text
    assert "service Probe {\n  rpc Get(Ask) returns (Everything);\n}" in text


def test_a_struct_change_shows_up_in_the_output() -> None:
    class Grown(msgspec.Struct):
        id: str
        added: int = 0

    before = render(Service("Probe", "A probe.", (Rpc("Get", Ask, Ask),)))
    after = render(Service("Probe", "A probe.", (Rpc("Get", Ask, Grown),)))
    assert "int64 added = 2;" in after and after != before


def test_types_without_a_proto3_form_are_refused_with_the_field() -> None:
    class Bad(msgspec.Struct):
        either: int | str

    class Nested(msgspec.Struct):
        grid: list[list[int]]

    for bad, field in ((Bad, "Bad.either"), (Nested, "Nested.grid")):
        with pytest.raises(TypeError, match=field):
            render(Service("Probe", "A probe.", (Rpc("Get", Ask, bad),)))


def test_field_numbers_follow_the_struct_field_order() -> None:
    for info in protogen._reachable([t for rpc in QUERY_SERVICE.rpcs for t in (rpc.request, rpc.response)]):
        descriptor = message_classes()[info.cls.__name__].DESCRIPTOR
        assert [(f.name, f.number) for f in descriptor.fields] == [
            (f.encode_name, n) for n, f in enumerate(info.fields, start=1)]


def test_every_rpc_has_a_handler_and_the_page_bound_is_the_http_one() -> None:
    assert set(HANDLERS) == {rpc.name for rpc in QUERY_SERVICE.rpcs}
    assert protogen.MAX_PAGE_SIZE == reads.MAX_PAGE
    info = mi.type_info(protogen.ListTasksRequest)
    assert isinstance(info, mi.StructType)
    page_size = next(f.type for f in info.fields if f.name == "page_size")
    assert isinstance(page_size, mi.IntType) and page_size.le == reads.MAX_PAGE
