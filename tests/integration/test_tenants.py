"""Tenants: the same id in two tenants names two streams; a caller sees only its own tenant's, in its own ids,
and another tenant's id answers exactly as an id that exists nowhere."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import SecretStr

from tests.integration.harness import running, settings_for

KEYS = SecretStr("k-acme=alice:rw:acme,k-beta=bob:rw:beta,k-void=vic:rw:void,k-default=dora:rw")
ACME, BETA, VOID, DEFAULT = ({"X-API-Key": k} for k in ("k-acme", "k-beta", "k-void", "k-default"))


def _create(project: str, budget: str = "10.00", **extra: Any) -> dict[str, Any]:
    return {"type": "project.create", "stream": f"project:{project}",
            "payload": {"title": "t", "currency": "EUR", "budget_total": budget}, **extra}


def _same_answer(one: httpx.Response, other: httpx.Response) -> bool:
    """Status and body equal, the request id aside."""
    def body(r: httpx.Response) -> Any:
        return {k: v for k, v in r.json().items() if k not in ("request_id", "instance")}
    return one.status_code == other.status_code and body(one) == body(other)


async def test_the_same_project_id_in_two_tenants_is_two_streams(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, api_keys=KEYS)
    async with running(settings) as (client, runtime):
        a = await client.post("/v1/commands", json=_create("p-1", "10.00", command_id="c-1"), headers=ACME)
        b = await client.post("/v1/commands", json=_create("p-1", "99.00", command_id="c-1"), headers=BETA)
        # Both created (version 1 each), and one command id in two tenants is two commands.
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json()["stream"] == b.json()["stream"] == "project:p-1"
        assert a.json()["command_id"] == b.json()["command_id"] == "c-1"
        assert a.json()["version"] == b.json()["version"] == 1
        assert "Idempotent-Replayed" not in b.headers
        # Inside, the streams are the tenants' own.
        assert runtime.commands is not None
        assert runtime.commands.peek("project:acme~p-1") is not None
        assert runtime.commands.peek("project:beta~p-1") is not None
        assert runtime.commands.peek("project:p-1") is None

        pos = {"consistent_with": a.json()["position"]}
        budget_a = await client.get("/v1/projects/p-1/budget", headers=ACME, params=pos)
        budget_b = await client.get("/v1/projects/p-1/budget", headers=BETA, params={
            "consistent_with": b.json()["position"]})
        assert budget_a.status_code == budget_b.status_code == 200
        assert (budget_a.json()["total"], budget_b.json()["total"]) == ("10.00", "99.00")
        assert budget_a.json()["project_id"] == budget_b.json()["project_id"] == "p-1"
        assert "acme~" not in budget_a.text and "beta~" not in budget_b.text

        # A tenant with nothing, and the default tenant, see neither: the same 404 as an id nobody has.
        for who in (VOID, DEFAULT):
            theirs = await client.get("/v1/projects/p-1/budget", headers=who, params=pos)
            nowhere = await client.get("/v1/projects/p-1/budget", headers=VOID, params=pos)
            assert theirs.status_code == 404 and _same_answer(theirs, nowhere)
        # A command's outcome is its tenant's only.
        assert (await client.get("/v1/commands/c-1", headers=ACME)).json()["stream"] == "project:p-1"
        void = await client.get("/v1/commands/c-1", headers=VOID)
        default = await client.get("/v1/commands/c-1", headers=DEFAULT)
        assert void.status_code == 404 and _same_answer(void, default)


async def test_no_caller_can_name_a_stored_id(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, api_keys=KEYS)
    async with running(settings) as (client, _):
        assert (await client.post("/v1/commands", json=_create("p-1"), headers=ACME)).status_code == 200
        for who in (BETA, DEFAULT):
            sent = await client.post("/v1/commands", json=_create("acme~p-1"), headers=who)
            assert (sent.status_code, sent.json()["code"]) == (422, "invalid_command")
            assert sent.json()["errors"][0]["path"] == "$.stream"
            read = await client.get("/v1/projects/acme~p-1/budget", headers=who)
            assert read.status_code == 422
            for path in ("history", "state"):
                read = await client.get(f"/v1/streams/project:acme~p-1/{path}", headers=who)
                assert (read.status_code, read.json()["code"]) == (422, "invalid_stream"), read.text
