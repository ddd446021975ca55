-- 0010: every row of a tenant's stream names its tenant, and PostgreSQL row-level security confines the
-- reader role to the rows of one tenant: a second line of defence behind the ids scoped to the caller's tenant.
--
-- `tenant` is a stored generated column: the tenant of the row's stored id (schemas/tenancy.sql_tenant_of:
-- 'acme' for 'acme~p-1', 'default' for an id without '~'), of the stream id for the change log, and of the
-- project's id for a project's shots and artifacts. Nothing writes it: the projector's statements stay as
-- they were. Byte-ordered like the change log's ids (0008): it is only ever compared for equality.
--
-- Row-level security applies to the role blackboard_tenant_reader alone: a read run as that role, with
-- `blackboard.tenant` set to a tenant (BLACKBOARD_READ_ROW_SECURITY: blackboard/pools.py), sees that tenant's
-- rows whatever its WHERE says, and with no tenant set it sees none. Every other role sees and writes every row as
-- before: the tables' owner bypasses row-level security (no FORCE), and the policy `all_rows` lets any other role
-- (a projector or query role that is not the owner) through.
--
-- A table added later that holds a tenant's rows needs the same column, policies and grant (a test checks it).

-- The role is the cluster's, shared by every database and schema: migrations of two schemas (a rebuild's
-- generation beside the live one) or of two databases may get here together. The lock orders those of one
-- database (an advisory lock is a database's); of two databases, the one that finds the role made by the other
-- meanwhile goes on.
DO $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('blackboard.tenant_reader_role'));
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'blackboard_tenant_reader') THEN
        CREATE ROLE blackboard_tenant_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
WHEN insufficient_privilege THEN
    RAISE EXCEPTION 'the role blackboard_tenant_reader does not exist and % may not create it', current_user
        USING HINT = 'as an administrator: CREATE ROLE blackboard_tenant_reader NOLOGIN; then migrate again';
END $$;

-- The query side switches to the role (SET ROLE), which needs membership unless it is a superuser. Granted
-- without INHERIT where the server knows the option (PostgreSQL 16+): the user never holds the reader's
-- privileges (nor its policies) except while a read has switched to it. A user that may not grant it (the role
-- made by another) is told so and goes on: an administrator grants it (docs/security.md).
DO $$
BEGIN
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
       OR pg_has_role(current_user, 'blackboard_tenant_reader', 'MEMBER') THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE 'GRANT blackboard_tenant_reader TO CURRENT_USER WITH INHERIT FALSE, SET TRUE';
    EXCEPTION WHEN syntax_error THEN
        EXECUTE 'GRANT blackboard_tenant_reader TO CURRENT_USER';
    END;
EXCEPTION WHEN unique_violation THEN
    NULL;  -- granted by a migration of another database meanwhile
WHEN insufficient_privilege OR invalid_grant_operation THEN
    RAISE NOTICE 'blackboard_tenant_reader is not granted to %: grant it for BLACKBOARD_READ_ROW_SECURITY',
        current_user;
END $$;

DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO blackboard_tenant_reader', current_schema());
END $$;

ALTER TABLE projects ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(id, '~') > 0 THEN split_part(id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE shots ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(project_id, '~') > 0 THEN split_part(project_id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE artifacts ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(project_id, '~') > 0 THEN split_part(project_id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE tasks ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(id, '~') > 0 THEN split_part(id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE nodes ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(id, '~') > 0 THEN split_part(id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE clocks ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(id, '~') > 0 THEN split_part(id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE sagas ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(id, '~') > 0 THEN split_part(id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE leases ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(name, '~') > 0 THEN split_part(name, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE documents ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(id, '~') > 0 THEN split_part(id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE checkpoints ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(id, '~') > 0 THEN split_part(id, '~', 1) ELSE 'default' END) STORED;
ALTER TABLE checkpoint_entries ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(thread_id, '~') > 0 THEN split_part(thread_id, '~', 1) ELSE 'default' END) STORED;
-- The stream's id is what follows '<category>:' (an id has no ':').
ALTER TABLE change_log ADD COLUMN tenant text COLLATE "C" GENERATED ALWAYS AS (
    CASE WHEN strpos(split_part(stream, ':', 2), '~') > 0 THEN split_part(split_part(stream, ':', 2), '~', 1)
    ELSE 'default' END) STORED;

-- The lists whose pages span a tenant's rows in one table walk these under row-level security (the others are
-- scoped by a stored id already: a project's shots and artifacts, a stream's history, a collection's documents).
CREATE INDEX projects_tenant_idx ON projects (tenant, id);
CREATE INDEX tasks_tenant_created_idx ON tasks (tenant, created_at, id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['projects', 'shots', 'artifacts', 'tasks', 'nodes', 'clocks', 'sagas', 'leases',
                             'documents', 'checkpoints', 'checkpoint_entries', 'change_log'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY all_rows ON %I USING (true) WITH CHECK (true)', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I AS RESTRICTIVE FOR SELECT TO blackboard_tenant_reader '
                       'USING (tenant = current_setting(''blackboard.tenant'', true))', t);
        EXECUTE format('GRANT SELECT ON %I TO blackboard_tenant_reader', t);
    END LOOP;
END $$;
