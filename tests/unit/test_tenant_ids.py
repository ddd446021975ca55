"""Stored ids on the way out and streams a tenant may name: a command id of the tenant is shown without its prefix
whatever characters it holds, and a stored stream is one tenant's only."""

from __future__ import annotations

import pytest

from blackboard.schemas.tenancy import is_tenants_stream, unscope_tree, unscope_value


@pytest.mark.parametrize(("stored", "shown"), [
    ("acme~p-1", "p-1"),
    ("project:acme~p-1", "project:p-1"),
    # Command ids may hold ':' and begin with any of their characters: a process manager's, a sweeper's.
    ("acme~pm.artifact-saga:1f2e3d", "pm.artifact-saga:1f2e3d"),
    ("acme~expire-reservations:p-1:3", "expire-reservations:p-1:3"),
    ("acme~:x", ":x"),
    ("acme~_x", "_x"),
    # Another tenant's, the default tenant's, and what is no stored id at all stay as they are.
    ("beta~p-1", "beta~p-1"),
    ("project:beta~p-1", "project:beta~p-1"),
    ("p-1", "p-1"),
    ("acme~", "acme~"),
    ("project:acme~p:1", "project:acme~p:1"),
    ("acme~p 1", "acme~p 1"),
])
def test_a_tenants_stored_ids_are_shown_as_it_names_them(stored: str, shown: str) -> None:
    assert unscope_value("acme", stored) == shown


def test_an_answer_is_unscoped_in_its_ids_and_its_prose() -> None:
    answer = {"command_id": "acme~pm.dependencies:ab12", "stream": "task:acme~t-2",
              "payload": {"depends_on": ["acme~t-1"], "node": "beta~n-1"},
              "detail": "task 'acme~t-1' does not exist"}
    assert unscope_tree("acme", answer) == {
        "command_id": "pm.dependencies:ab12", "stream": "task:t-2",
        "payload": {"depends_on": ["t-1"], "node": "beta~n-1"}, "detail": "task 't-1' does not exist"}


@pytest.mark.parametrize(("tenant", "stream", "theirs"), [
    ("acme", "project:acme~p-1", True),
    ("default", "project:p-1", True),
    (None, "project:p-1", True),
    # The stored id of another tenant, named by the default tenant (whose ids carry no prefix): not its stream.
    ("default", "project:acme~p-1", False),
    ("beta", "project:acme~p-1", False),
    ("acme", "project:p-1", False),
    # What scoping another tenant's stored id gives: no stream of anyone's.
    ("acme", "project:acme~beta~p-1", False),
])
def test_a_stored_stream_is_one_tenants_only(tenant: str | None, stream: str, theirs: bool) -> None:
    assert is_tenants_stream(tenant, stream) is theirs
