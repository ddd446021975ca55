-- 0005: the agent cluster: tasks folded with their decider's state (claims, attempts, dependencies),
-- nodes (workers) and the clock of the log.

ALTER TABLE tasks
    ADD COLUMN state            jsonb,
    ADD COLUMN type             text        NOT NULL DEFAULT 'default',
    ADD COLUMN user_id          text,
    ADD COLUMN parent           text,
    ADD COLUMN required_skills  text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN depends_on       text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN node             text,
    ADD COLUMN token            bigint      NOT NULL DEFAULT 0,
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN attempts         integer     NOT NULL DEFAULT 0,
    ADD COLUMN max_attempts     integer     NOT NULL DEFAULT 3,
    ADD COLUMN not_before       timestamptz,
    ADD COLUMN progress         jsonb,
    ADD COLUMN finished_at      timestamptz;

-- A row written before the state column existed has none: the projector rebuilds it from the columns
-- (see ``projector/tables.py``), as they said everything the task was then.

-- The next task to claim: pending, highest priority first, oldest first within a priority.
CREATE INDEX tasks_claimable_idx ON tasks (priority DESC, created_at, id) WHERE status = 'pending';
CREATE INDEX tasks_node_idx ON tasks (node, status) WHERE node IS NOT NULL;
CREATE INDEX tasks_user_idx ON tasks (user_id, created_at, id);
CREATE INDEX tasks_type_idx ON tasks (type, created_at, id);
CREATE INDEX tasks_parent_idx ON tasks (parent, created_at, id);
CREATE INDEX tasks_finished_idx ON tasks (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE nodes (
    id              text        PRIMARY KEY,
    state           jsonb       NOT NULL,
    hostname        text        NOT NULL,
    platform        text        NOT NULL,
    skills          text[]      NOT NULL,
    capacity        integer     NOT NULL,
    status          text        NOT NULL,
    reported_status text        NOT NULL,
    load            integer     NOT NULL,
    ttl_seconds     integer     NOT NULL,
    last_seen       timestamptz NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    partition       integer     NOT NULL,
    last_offset     bigint      NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX nodes_status_idx ON nodes (status, id);
CREATE INDEX nodes_skills_idx ON nodes USING gin (skills);

CREATE TABLE clocks (
    id          text        PRIMARY KEY,
    state       jsonb       NOT NULL,
    at          timestamptz NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    partition   integer     NOT NULL,
    last_offset bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE sagas (
    id          text        PRIMARY KEY,
    state       jsonb       NOT NULL,
    project_id  text        NOT NULL,
    status      text        NOT NULL,
    steps       text[]      NOT NULL,
    reason      text        NOT NULL,
    deadline    timestamptz NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    partition   integer     NOT NULL,
    last_offset bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX sagas_project_idx ON sagas (project_id, created_at, id);
