-- 0001: the first read models: projects (with budget), shots, tasks, the change log, dead letters, offsets.

-- Offsets live beside the rows they produced and are written in the same transaction:
-- a crash anywhere replays into the same result.
CREATE TABLE projection_offsets (
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

CREATE TABLE projects (
    id           text          PRIMARY KEY,
    title        text          NOT NULL,
    currency     char(3)       NOT NULL,
    -- Unconstrained numeric keeps the scale the money was given in ("12.50" stays "12.50");
    -- the checks bound it as numeric(24,4) would, without padding every amount to 4 decimals.
    budget_total numeric       NOT NULL CHECK (budget_total >= 0 AND budget_total < 1e20 AND scale(budget_total) <= 4),
    spent        numeric       NOT NULL DEFAULT 0 CHECK (spent >= 0 AND spent < 1e20 AND scale(spent) <= 4),
    global_spec  jsonb         NOT NULL DEFAULT '{}',
    version      bigint        NOT NULL CHECK (version >= 1),
    partition    integer       NOT NULL,
    last_offset  bigint        NOT NULL,
    created_at   timestamptz   NOT NULL,
    updated_at   timestamptz   NOT NULL,
    -- The decider never overspends; the read model refuses to show it even if something did.
    CONSTRAINT budget_not_overspent CHECK (spent <= budget_total)
);

CREATE TABLE shots (
    project_id text        NOT NULL REFERENCES projects (id),
    shot_id    text        NOT NULL,
    fields     jsonb       NOT NULL,
    version    bigint      NOT NULL CHECK (version >= 1),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (project_id, shot_id)
);

CREATE TABLE tasks (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    priority    integer     NOT NULL,
    payload     jsonb,
    status      text        NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    partition   integer     NOT NULL,
    last_offset bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
-- Keyset pagination of GET /v1/tasks?status=… walks this index.
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at, id);
CREATE INDEX tasks_created_idx ON tasks (created_at, id);

-- The audit trail: every applied event, once ((stream, stream_version) is the guard).
CREATE TABLE change_log (
    stream         text        NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version >= 1),
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    event_id       text        NOT NULL UNIQUE,
    type           text        NOT NULL,
    schema_version integer     NOT NULL,
    actor          text        NOT NULL,
    command_id     text        NOT NULL,
    correlation_id text        NOT NULL,
    causation_id   text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    payload        jsonb       NOT NULL,
    PRIMARY KEY (stream, stream_version)
);
CREATE INDEX change_log_command_idx ON change_log (command_id);

-- Records the projector could not decode or apply, with the reason; it went on without them.
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    projection  text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    reason      text        NOT NULL,
    key         bytea,
    headers     jsonb       NOT NULL,
    value       bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, topic, partition, "offset")
);
