"""JWT bearer tokens beside API keys: every way a credential can be wrong is a 401, scopes decide what a principal
may do (a 403 names the scope it lacks), and the actor and tenant of every event are the token's, never the
request's. The tokens and the issuer's keys are made here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from blackboard.config import Settings
from blackboard.schemas.auth import ADMIN, OPERATOR_COMMANDS, key_digest, write_scope
from blackboard.schemas.registry import COMMAND_TYPES, SYSTEM_COMMANDS
from tests.integration.harness import read_events, running, settings_for
from tests.integration.test_grpc import Client, _fails, channel_to
from tests.integration.tokens import (
    bearer,
    claims,
    hs256_with_public_key,
    jwt_settings,
    tampered,
    token,
    unsigned,
    write_jwks,
)

CREATE = {"type": "project.create", "stream": "project:p-1",
          "payload": {"title": "t", "currency": "EUR", "budget_total": "10.00"}}
#: Two keys of one principal valid at once (a rotation under way); "k-old" was rotated out.
KEYS = f"sha256:{key_digest('k-new')}=ops:rw,sha256:{key_digest('k-newer')}=ops:rw:beta"


@pytest.fixture
def jwt_server(pg_url: str, topic_prefix: str, tmp_path: Path) -> Settings:
    jwks = write_jwks(tmp_path / "jwks.json", "k1")
    return settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, api_keys=SecretStr(KEYS),
                        **jwt_settings(jwks))


def failures() -> dict[str, dict[str, str]]:
    """Every credential that must be refused with a 401, by what is wrong with it."""
    now = int(time.time())
    honest = token()
    return {
        "no credential": {},
        "expired": bearer(token(claims(exp=now - 60))),
        "not yet valid": bearer(token(claims(nbf=now + 60))),
        "wrong issuer": bearer(token(claims(iss="https://evil.test"))),
        "wrong audience": bearer(token(claims(aud="someone-else"))),
        "alg none": bearer(unsigned(claims())),
        "HS256 signed with the RSA public key": bearer(hs256_with_public_key(claims())),
        "tampered payload": bearer(tampered(honest, scope="blackboard:admin blackboard:write")),
        "unknown kid": bearer(token(kid="k-unknown")),
        "no tenant claim": bearer(token(claims(tenant=None))),
        "no sub": bearer(token({k: v for k, v in claims().items() if k != "sub"})),
        "rotated-out API key": bearer("k-old"),
        "rotated-out API key (X-API-Key)": {"X-API-Key": "k-old"},
        "garbage": bearer("eyJ.not.a-token"),
    }


async def test_every_bad_credential_is_a_401(jwt_server: Settings) -> None:
    async with running(jwt_server) as (client, _):
        answers = {name: await client.get("/v1/tasks", headers=headers) for name, headers in failures().items()}
        wrong = {name: (r.status_code, r.text) for name, r in answers.items()
                 if r.status_code != 401 or r.json()["code"] not in ("missing_credentials", "invalid_credentials")}
        assert not wrong
        assert "expired" in answers["expired"].json()["message"]
        # The good ones: a token, and both keys of the rotation.
        for headers in (bearer(token()), bearer("k-new"), {"X-API-Key": "k-newer"}):
            assert (await client.get("/v1/tasks", headers=headers)).status_code == 200


async def test_a_key_added_to_the_jwks_is_found_by_its_kid(pg_url: str, topic_prefix: str, tmp_path: Path) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", "k1")
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix,
                            **jwt_settings(jwks, jwt_jwks_refresh_seconds=0))
    async with running(settings) as (client, _):
        assert (await client.get("/v1/tasks", headers=bearer(token(kid="k2")))).status_code == 401
        write_jwks(jwks, "k1", "k2")  # the issuer rotates: its next key is published
        assert (await client.get("/v1/tasks", headers=bearer(token(kid="k2")))).status_code == 200


def _command(type_: str) -> dict[str, Any]:
    return {"type": type_, "stream": f"{COMMAND_TYPES[type_][0]}:x-1", "payload": {}}


def _scope_of(type_: str) -> str:
    if type_ in SYSTEM_COMMANDS or type_ in OPERATOR_COMMANDS:
        return ADMIN
    return write_scope(COMMAND_TYPES[type_][0])


async def test_scopes_decide_what_a_principal_may_do(jwt_server: Settings) -> None:
    reader = bearer(token(claims(scope="blackboard:read")))
    worker = bearer(token(claims("worker-7", scope="blackboard:write:task")))
    async with running(jwt_server) as (client, _):
        for type_ in COMMAND_TYPES:
            refused = await client.post("/v1/commands", json=_command(type_), headers=reader)
            assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope"), type_
            assert f"'{_scope_of(type_)}'" in refused.json()["message"], refused.text
            assert f'scope="{_scope_of(type_)}"' in refused.headers["www-authenticate"]
        budget = {"type": "project.reserve_budget", "stream": "project:p-1",
                  "payload": {"reservation_id": "r-1", "amount": "1.00", "ttl_seconds": 60}}
        refused = await client.post("/v1/commands", json=budget, headers=worker)
        assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
        assert "blackboard:write:project" in refused.json()["message"]
        # A body naming two types passes as neither the one it may send nor the one it may not.
        twice = (b'{"type": "task.create", "stream": "project:p-1", "payload": {"total": "1.00"}, '
                 b'"type": "project.set_budget_total"}')
        smuggled = await client.post("/v1/commands", content=twice,
                                     headers={**worker, "Content-Type": "application/json"})
        assert smuggled.status_code in (403, 422), smuggled.text
        made = await client.post("/v1/commands", headers=worker,
                                 json={"type": "task.create", "stream": "task:t-1", "payload": {"name": "render"}})
        assert made.status_code == 200, made.text
        # A writer of tasks only may not read, nor send the operator's override.
        no_read = await client.get("/v1/tasks", headers=worker)
        assert (no_read.status_code, no_read.json()["code"]) == (403, "insufficient_scope")
        assert "blackboard:read" in no_read.json()["message"]
        override = await client.post("/v1/commands", json=_command("task.override_status"), headers=worker)
        assert override.status_code == 403 and "blackboard:admin" in override.json()["message"]
        checkpoint = await client.put("/v1/checkpoints/th-1", content=b"x", headers=worker)
        assert checkpoint.status_code == 403 and "blackboard:write:checkpoint" in checkpoint.json()["message"]


async def test_the_actor_and_tenant_of_every_event_are_the_credentials(jwt_server: Settings) -> None:
    alice = bearer(token(claims("alice", tenant="acme")))
    forged = {"actor": "mallory", "X-Actor": "mallory", "X-Blackboard-Actor": "mallory", "X-Tenant": "other"}
    async with running(jwt_server) as (client, runtime):
        refused = await client.post("/v1/commands", json={**CREATE, "actor": "mallory"}, headers=alice)
        assert (refused.status_code, refused.json()["code"]) == (422, "invalid_command")
        ok = await client.post("/v1/commands", json=CREATE, headers={**alice, **forged})
        assert ok.status_code == 200, ok.text
        by_key = await client.post("/v1/commands", headers={"X-API-Key": "k-newer", **forged},
                                   json={**CREATE, "stream": "project:p-2"})
        assert by_key.status_code == 200, by_key.text
        events = await read_events(runtime.log, jwt_server.events_topic)  # type: ignore[arg-type]
        stored = {e.envelope.stream: (e.envelope.actor, e.envelope.tenant) for e in events}
        # Stored in their tenants' streams (schemas/tenancy.py); each caller names them without the prefix.
        assert stored == {"project:acme~p-1": ("alice", "acme"), "project:beta~p-2": ("ops", "beta")}
        history = await client.get("/v1/streams/project:p-1/history", headers=alice,
                                   params={"consistent_with": ok.json()["position"]})
        assert [e["actor"] for e in history.json()["items"]] == ["alice"]


async def test_grpc_takes_a_jwt(pg_url: str, topic_prefix: str, tmp_path: Path) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", "k1")
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, grpc_port=0, **jwt_settings(jwks))
    async with running(settings) as (_, runtime), channel_to(runtime.grpc_port) as channel:
        def call(credential: str) -> Client:
            return Client(channel, (("authorization", f"Bearer {credential}"),))

        await _fails(call(token())("GetTask", task_id="t-1"), grpc.StatusCode.NOT_FOUND, "task_not_found")
        expired = token(claims(exp=int(time.time()) - 60))
        await _fails(call(expired)("GetTask", task_id="t-1"), grpc.StatusCode.UNAUTHENTICATED,
                     "invalid_credentials")
        await _fails(call(unsigned(claims()))("GetTask", task_id="t-1"), grpc.StatusCode.UNAUTHENTICATED,
                     "invalid_credentials")
        writer = token(claims(scope="blackboard:write:task"))
        await _fails(call(writer)("GetTask", task_id="t-1"), grpc.StatusCode.PERMISSION_DENIED, "insufficient_scope")
