"""Row-level security on the read models: the role ``blackboard_tenant_reader`` with ``blackboard.tenant`` set sees
that tenant's rows only, whatever its statement asks; the projector and the owner see and write every row; and with
``BLACKBOARD_READ_ROW_SECURITY`` the reads of a request run so."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from blackboard.projector.migrate import migrate, quote_ident
from blackboard.query_api.tenant_reads import READER_ROLE, reading_as
from blackboard.schemas.errors import NotFound
from blackboard.schemas.tenancy import sql_tenant_of
from tests.integration.harness import running, settings_for
from tests.integration.test_grpc import Client, channel_to
from tests.integration.test_push import listen
from tests.integration.test_push import serving as push_serving

#: Every read-model table of a tenant's rows, and the column holding the stored id its tenant is read from.
TENANT_TABLES = {
    "projects": "id", "shots": "project_id", "artifacts": "project_id", "tasks": "id", "nodes": "id",
    "clocks": "id", "sagas": "id", "leases": "name", "documents": "id", "checkpoints": "id",
    "checkpoint_entries": "thread_id", "change_log": "stream",
}
#: The tables that hold no tenant's rows: the projector's and the operator's own.
UNTENANTED = {"projection_offsets", "dead_letters", "schema_migrations"}
#: A stored id of each tenant (the default tenant's has no prefix).
IDS = {"acme": "acme~x-1", "beta": "beta~x-1", "default": "x-1"}

_FILLER = {"text": "v", "jsonb": "{}", "numeric": 0, "bigint": 1, "integer": 1, "boolean": False, "ARRAY": [],
           "character": "EUR", "bytea": b""}


async def _fill(conn: asyncpg.Connection, table: str, given: dict[str, Any]) -> None:
    """Insert a row of ``table`` with ``given`` and a plain value in every other required column."""
    columns = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = $1 AND is_nullable = 'NO' AND column_default IS NULL AND is_generated = 'NEVER'", table)
    row = dict(given)
    for c in columns:
        if c["column_name"] in row:
            continue
        if c["data_type"] == "timestamp with time zone":
            row[c["column_name"]] = await conn.fetchval("SELECT now()")
        else:
            value = _FILLER[c["data_type"]]
            # Unique columns (the change log's event id) get a value of the row's own.
            row[c["column_name"]] = f"{value}-{uuid.uuid4().hex[:8]}" if c["data_type"] == "text" else value
    names = list(row)
    marks = ", ".join(f"${i + 1}" for i in range(len(names)))
    await conn.execute(f"INSERT INTO {table} ({', '.join(map(quote_ident, names))}) VALUES ({marks})", *row.values())


def _row(table: str, ident: str) -> dict[str, Any]:
    """The keys of one row of ``table`` of the stored id ``ident``."""
    column = TENANT_TABLES[table]
    if table == "documents":
        return {"id": f"{ident.replace('x-1', 'c')}.d", "collection": ident.replace("x-1", "c"), "doc_id": "d"}
    if table == "change_log":
        return {"stream": f"project:{ident}", "stream_version": 1}
    return {column: ident}


@pytest.fixture
async def schema(pg_url: str) -> AsyncIterator[tuple[str, str]]:
    """The read models of a fresh schema, with one row of each tenant in every table: (url, schema)."""
    name = "rls"
    conn = await asyncpg.connect(pg_url)
    try:
        await migrate(conn, name)
        await conn.execute(f"SET search_path TO {name}")
        for table in TENANT_TABLES:
            for ident in IDS.values():
                await _fill(conn, table, _row(table, ident))
    finally:
        await conn.close()
    yield pg_url, name


async def _reader(url: str, schema: str, tenant: str | None) -> asyncpg.Connection:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    await conn.execute(f"SET ROLE {READER_ROLE}")
    if tenant is not None:
        await conn.execute("SELECT set_config('blackboard.tenant', $1, false)", tenant)
    return conn


async def test_the_reader_sees_its_tenants_rows_only_whatever_it_asks(schema: tuple[str, str]) -> None:
    url, name = schema
    for tenant in IDS:
        conn = await _reader(url, name, tenant)
        try:
            for table in TENANT_TABLES:
                rows = await conn.fetch(f"SELECT * FROM {table}")  # no WHERE: the policy alone confines it
                assert [r["tenant"] for r in rows] == [tenant], (table, tenant)
                other = next(i for t, i in IDS.items() if t != tenant)
                column = "stream" if table == "change_log" else TENANT_TABLES[table]
                assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {column} LIKE $1",
                                           f"%{other}%") == 0
        finally:
            await conn.close()


@pytest.mark.parametrize("tenant", [None, "", "nobody"])
async def test_the_reader_without_a_tenant_sees_nothing(schema: tuple[str, str], tenant: str | None) -> None:
    url, name = schema
    conn = await _reader(url, name, tenant)
    try:
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # And it may only read: no write passes, nor does a table that holds no tenant's rows.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM projects")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM dead_letters")
    finally:
        await conn.close()


async def test_the_owner_and_any_other_role_see_every_row(schema: tuple[str, str]) -> None:
    url, name = schema
    conn = await asyncpg.connect(url, server_settings={"search_path": name})
    other = f"t_other_{uuid.uuid4().hex[:8]}"
    try:
        for table in TENANT_TABLES:
            assert sorted(r["tenant"] for r in await conn.fetch(f"SELECT tenant FROM {table}")) == sorted(IDS)
        # A role that is neither the owner nor the reader (a separate projector or query role) is not confined.
        await conn.execute(f"CREATE ROLE {other} NOLOGIN")
        await conn.execute(f"GRANT USAGE ON SCHEMA {name} TO {other}")
        await conn.execute(f"GRANT SELECT, UPDATE ON projects TO {other}")
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {other}")
            assert await conn.fetchval("SELECT count(*) FROM projects") == len(IDS)
            assert await conn.execute("UPDATE projects SET title = 'w'") == f"UPDATE {len(IDS)}"
            await conn.execute("RESET ROLE")
        await conn.execute(f"REVOKE ALL ON projects FROM {other}")
        await conn.execute(f"REVOKE ALL ON SCHEMA {name} FROM {other}")
    finally:
        await conn.execute(f"DROP ROLE IF EXISTS {other}")
        await conn.close()


async def test_every_table_of_a_tenants_rows_is_confined_and_names_it_as_the_ids_do(
        schema: tuple[str, str]) -> None:
    url, name = schema
    conn = await asyncpg.connect(url, server_settings={"search_path": name})
    try:
        tables = {r["tablename"]: r["rowsecurity"]
                  for r in await conn.fetch("SELECT tablename, rowsecurity FROM pg_tables WHERE schemaname = $1", name)}
        # A new table is either a tenant's (and confined) or named here as holding none.
        assert set(tables) == set(TENANT_TABLES) | UNTENANTED
        assert {t for t, on in tables.items() if on} == set(TENANT_TABLES)
        policies = await conn.fetch("SELECT tablename, policyname, permissive, roles FROM pg_policies "
                                    "WHERE schemaname = $1", name)
        for table in TENANT_TABLES:
            assert {(p["policyname"], p["permissive"], tuple(p["roles"])) for p in policies
                    if p["tablename"] == table} == {("all_rows", "PERMISSIVE", ("public",)),
                                                    ("tenant_isolation", "RESTRICTIVE", (READER_ROLE,))}
        # The generated column says what schemas/tenancy.sql_tenant_of says of the same stored id.
        for ident in ("acme~p-1", "p-1", "a.b-c~x~y", "t.1~doc.d-1"):
            expected = await conn.fetchval(f"SELECT {sql_tenant_of('i')} FROM (SELECT $1::text AS i) AS s", ident)
            await conn.execute("INSERT INTO leases (name, token, state, version, partition, last_offset, created_at, "
                               "updated_at) VALUES ($1, 0, '{}', 1, 0, 0, now(), now())", ident)
            assert await conn.fetchval("SELECT tenant FROM leases WHERE name = $1", ident) == expected
            await _fill(conn, "change_log", {"stream": f"doc:{ident}", "stream_version": 1})
            assert await conn.fetchval("SELECT tenant FROM change_log WHERE stream = $1", f"doc:{ident}") == expected
    finally:
        await conn.close()


async def test_a_second_run_and_a_second_schema_change_nothing(schema: tuple[str, str]) -> None:
    url, name = schema
    conn = await asyncpg.connect(url)
    try:
        assert await migrate(conn, name) == []
        # A rebuild's generation is made by the same files: the role exists already, and the schema is confined too.
        applied = await migrate(conn, f"{name}_g1")
        assert applied[-1] == "0010_tenant_rows"
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND rowsecurity",
                                   f"{name}_g1") == len(TENANT_TABLES)
        assert await conn.fetchval("SELECT has_schema_privilege($1, $2, 'USAGE')", READER_ROLE, f"{name}_g1")
    finally:
        await conn.close()


# ── through the server ─────────────────────────────────────────────────────────────────────────────────────

KEYS = SecretStr("k-acme=alice:rw:acme,k-beta=bob:rw:beta,k-default=dora:rw")
ACME, BETA, DEFAULT = ({"X-API-Key": k} for k in ("k-acme", "k-beta", "k-default"))


async def _write(client: httpx.AsyncClient, who: dict[str, str], body: dict[str, Any]) -> str:
    sent = await client.post("/v1/commands", json=body, headers=who)
    assert sent.status_code == 200, sent.text
    position: str = sent.json()["position"]
    return position


async def test_with_row_security_each_tenant_reads_its_own_through_the_server(pg_url: str, topic_prefix: str) -> None:
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, api_keys=KEYS,
                            read_row_security=True, grpc_port=0)
    async with running(settings) as (client, runtime), channel_to(runtime.grpc_port) as channel:
        budgets = {"acme": "10.00", "beta": "20.00", "default": "30.00"}
        positions = {}
        for who, tenant in ((ACME, "acme"), (BETA, "beta"), (DEFAULT, "default")):
            await _write(client, who, {"type": "project.create", "stream": "project:p-1", "payload": {
                "title": tenant, "currency": "EUR", "budget_total": budgets[tenant]}})
            positions[tenant] = await _write(client, who, {"type": "task.create", "stream": "task:t-1",
                                                           "payload": {"name": tenant}})
        for who, tenant in ((ACME, "acme"), (BETA, "beta"), (DEFAULT, "default")):
            pos = {"consistent_with": positions[tenant]}
            project = await client.get("/v1/projects/p-1", headers=who, params=pos)
            assert (project.status_code, project.json()["title"]) == (200, tenant), project.text
            task = await client.get("/v1/tasks/t-1", headers=who, params=pos)
            assert (task.status_code, task.json()["name"]) == (200, tenant), task.text
            listed = await client.get("/v1/projects", headers=who, params=pos)
            assert [p["title"] for p in listed.json()["items"]] == [tenant]
            tasks = await client.get("/v1/tasks", headers=who, params=pos)
            assert [t["name"] for t in tasks.json()["items"]] == [tenant]
            history = await client.get("/v1/streams/project:p-1/history", headers=who, params=pos)
            assert [e["type"] for e in history.json()["items"]] == ["project.created"], history.text
            call = Client(channel, tuple((k.lower(), v) for k, v in who.items()))
            assert (await call("GetProject", project_id="p-1", consistent_with=positions[tenant])).title == tenant
            assert [t.name for t in (await call("ListTasks")).items] == [tenant]

        # The second line on its own: a read of another tenant's stored id, made in a request of acme's, finds
        # nothing, though nothing but the policy stands in its way; outside a request it is found.
        reads = runtime.reads
        assert reads is not None
        with reading_as("acme"):
            assert b'"acme"' in await reads.project("acme~p-1", None)
            with pytest.raises(NotFound):
                await reads.project("beta~p-1", None)
            with pytest.raises(NotFound):
                await reads.task("t-1", None)
            assert (await reads.history("project:beta~p-1", 0, 10, None)).items == []
        assert b'"beta"' in await reads.project("beta~p-1", None)
        # The request's role ended with its read: the pool's connections read as the owner again.
        assert await reads.pool.fetchval("SELECT current_user <> $1", READER_ROLE)
        assert await reads.pool.fetchval("SELECT count(*) FROM projects") == 3


async def test_a_user_that_may_not_grant_the_role_migrates_and_is_told(pg_url: str) -> None:
    """A user that neither is a superuser nor may grant the (existing) role: its migration goes on, and once an
    administrator grants it the role, its reads may switch to it."""
    user = f"t_user_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_url)
    database = await admin.fetchval("SELECT current_database()")
    await migrate(admin, "theirs")  # the role exists: made by a superuser
    await admin.execute(f"CREATE ROLE {user} LOGIN")
    try:
        await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {user}')
        conn = await asyncpg.connect(pg_url, user=user)
        try:
            notices: list[str] = []
            conn.add_log_listener(lambda _, message: notices.append(str(message)))
            assert (await migrate(conn, "mine"))[-1] == "0010_tenant_rows"
            assert not await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", READER_ROLE)
            assert any("is not granted" in n for n in notices), notices
            await admin.execute(f"GRANT {READER_ROLE} TO {user}")
            await conn.execute(f"SET ROLE {READER_ROLE}")
            assert await conn.fetchval("SELECT count(*) FROM mine.projects") == 0
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP OWNED BY {user}")
        await admin.execute(f"DROP ROLE {user}")
        await admin.close()


async def test_with_row_security_a_push_stream_shows_its_tenants_changes(pg_url: str, topic_prefix: str) -> None:
    """A push stream reads while its response streams: still inside its request, so still confined."""
    settings = settings_for("postgres", pg_url=pg_url, topic_prefix=topic_prefix, api_keys=KEYS,
                            read_row_security=True)
    async with push_serving(settings) as (client, _):
        for who, tenant in ((ACME, "acme"), (BETA, "beta")):
            await _write(client, who, {"type": "project.create", "stream": "project:p-1", "payload": {
                "title": tenant, "currency": "EUR", "budget_total": "1.00"}})
        for who, tenant in ((ACME, "acme"), (BETA, "beta")):
            [(version, entry)] = await listen(client, "/v1/projects/p-1/changes", count=1, headers=who)
            assert (version, entry["type"], entry["payload"]["title"]) == (1, "project.created", tenant), entry
