"""API keys: 401 without or with a wrong key, 403 for a read-only key on a command, and the actor of
every event is the key's principal, never a value from the body."""

from __future__ import annotations

from pydantic import SecretStr

from tests.integration.harness import running, settings_for

CREATE = {"type": "project.create", "stream": "project:p-1",
          "payload": {"title": "t", "currency": "EUR", "budget_total": "10.00"}}


async def test_keys_decide_who_may_do_what_and_who_the_actor_is(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix,
                            api_keys=SecretStr("k-alice=alice:rw,k-bob=bob:ro"))
    async with running(settings) as (client, _):
        missing = await client.post("/v1/commands", json=CREATE)
        wrong = await client.post("/v1/commands", json=CREATE, headers={"Authorization": "Bearer nope"})
        read_only = await client.post("/v1/commands", json=CREATE, headers={"X-API-Key": "k-bob"})
        assert (missing.status_code, missing.json()["code"]) == (401, "missing_credentials")
        assert (wrong.status_code, wrong.json()["code"]) == (401, "invalid_credentials")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert (read_only.status_code, read_only.json()["code"]) == (403, "insufficient_scope")

        ok = await client.post("/v1/commands", json={**CREATE, "actor": "mallory"},
                               headers={"Authorization": "Bearer k-alice"})
        assert (ok.status_code, ok.json()["code"]) == (422, "invalid_command")
        ok = await client.post("/v1/commands", json=CREATE, headers={"Authorization": "Bearer k-alice"})
        assert ok.status_code == 200

        history = await client.get("/v1/streams/project:p-1/history", headers={"X-API-Key": "k-bob"},
                                   params={"consistent_with": ok.json()["position"]})
        assert history.status_code == 200 and [e["actor"] for e in history.json()["items"]] == ["alice"]
        assert (await client.get("/v1/projects/p-1")).status_code == 401
