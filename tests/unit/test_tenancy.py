"""Stored ids of tenants (schemas/tenancy.py): scoping and unscoping are each other's inverse, the default tenant's
ids never change, and an answer is changed only where it holds exactly a stored id of the caller's own tenant."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blackboard.schemas.task import CreateTask
from blackboard.schemas.tenancy import (
    TenantMismatch,
    scope_id,
    scope_payload,
    scope_stream,
    split_id,
    tenant_of_stream,
    unscope_command,
    unscope_json,
    unscope_stream,
    unscope_value,
)

ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
tenants = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,10}\Z").filter(lambda t: t != "default")


@given(tenants, ids)
def test_a_scoped_stream_unscopes_to_what_its_tenant_named(tenant: str, ident: str) -> None:
    stored = scope_stream(tenant, f"task:{ident}")
    assert stored == f"task:{tenant}~{ident}"
    assert unscope_stream(stored) == (tenant, f"task:{ident}")
    assert tenant_of_stream(stored) == tenant and split_id(scope_id(tenant, ident)) == (tenant, ident)
    assert unscope_value(tenant, stored) == f"task:{ident}" and unscope_value(tenant, scope_id(tenant, ident)) == ident


@given(ids)
def test_the_default_tenants_ids_are_stored_as_they_are(ident: str) -> None:
    for tenant in (None, "default"):
        assert scope_id(tenant, ident) == ident and scope_stream(tenant, f"project:{ident}") == f"project:{ident}"
    assert tenant_of_stream(f"project:{ident}") == "default"


@given(tenants, tenants, ids)
def test_an_answer_shows_only_the_callers_own_ids_unscoped(mine: str, other: str, ident: str) -> None:
    body = msgspec.json.encode({"id": scope_id(mine, ident), "theirs": scope_id(other, ident) if other != mine
                                else ident, "stream": f"project:{scope_id(mine, ident)}",
                                "detail": f"project '{scope_id(mine, ident)}' does not exist",
                                "note": f"see {scope_id(mine, ident)} later", "n": 1.5})
    out = msgspec.json.decode(unscope_json(mine, body))
    assert out["id"] == ident and out["stream"] == f"project:{ident}"
    assert out["detail"] == f"project '{ident}' does not exist"
    # Not prose and not exactly a stored id: left as it is; another tenant's id is never touched.
    assert out["note"] == f"see {scope_id(mine, ident)} later" and out["n"] == 1.5
    assert out["theirs"] == (scope_id(other, ident) if other != mine else ident)


def test_a_default_callers_answer_is_never_rewritten() -> None:
    body = b'{"id":"acme~p-1"}'
    assert unscope_json("default", body) is body


def test_payload_references_are_scoped_and_a_managers_command_is_given_back_as_sent() -> None:
    payload = CreateTask(name="n", depends_on=["t-1", "t-2"], parent="t-0")
    scoped = scope_payload("acme", "task.create", payload)
    assert isinstance(scoped, CreateTask)
    assert scoped.depends_on == ["acme~t-1", "acme~t-2"] and scoped.parent == "acme~t-0"
    assert scope_payload("default", "task.create", payload) is payload
    tenant, stream, sent = unscope_command("task:acme~t-3", "task.create", msgspec.to_builtins(scoped))
    assert (tenant, stream) == ("acme", "task:t-3")
    assert sent["depends_on"] == ["t-1", "t-2"] and sent["parent"] == "t-0"
    with pytest.raises(TenantMismatch):
        unscope_command("task:acme~t-3", "task.create", {"name": "n", "depends_on": ["beta~t-1"]})
