-- 0004: the production blackboard: project status, spec version, reservations and the DNA bank on
-- the project row; shots with their creation time; artifacts; leases; agent metadata in the change log.

-- The project's full state as its decider folds it (``msgspec.to_builtins`` of the state): the
-- projector folds each event into it with the decider's own ``evolve``, so the read model and the
-- decisions can never disagree; the other columns are derived from it for queries and indexes.
ALTER TABLE projects ADD COLUMN state jsonb;
ALTER TABLE projects ADD COLUMN status text NOT NULL DEFAULT 'draft'
    CHECK (status IN ('draft', 'active', 'paused', 'completed', 'archived'));
ALTER TABLE projects ADD COLUMN reserved numeric NOT NULL DEFAULT 0
    CHECK (reserved >= 0 AND reserved < 1e20 AND scale(reserved) <= 4);
ALTER TABLE projects ADD COLUMN spec_version bigint NOT NULL DEFAULT 1 CHECK (spec_version >= 1);
-- key → {value, version, by}; removed entries are not listed.
ALTER TABLE projects ADD COLUMN dna jsonb NOT NULL DEFAULT '{}';
-- reservation id → {amount, reason, expires_at, by}: the money held for work in flight.
ALTER TABLE projects ADD COLUMN reservations jsonb NOT NULL DEFAULT '{}';
ALTER TABLE projects DROP CONSTRAINT budget_not_overspent;
ALTER TABLE projects ADD CONSTRAINT budget_not_overcommitted CHECK (spent + reserved <= budget_total);
CREATE INDEX projects_status_updated_idx ON projects (status, updated_at, id);
CREATE INDEX projects_updated_idx ON projects (updated_at, id);
-- The sweeper asks which projects hold a reservation; most hold none.
CREATE INDEX projects_reserving_idx ON projects (id) WHERE reservations <> '{}';

ALTER TABLE shots ADD COLUMN created_at timestamptz;
UPDATE shots SET created_at = updated_at WHERE created_at IS NULL;
ALTER TABLE shots ALTER COLUMN created_at SET NOT NULL;
CREATE INDEX shots_status_idx ON shots (project_id, (fields ->> 'status'), shot_id);
CREATE INDEX shots_scene_idx ON shots (project_id, (fields ->> 'scene'), shot_id);

CREATE TABLE artifacts (
    project_id     text        NOT NULL REFERENCES projects (id),
    artifact_id    text        NOT NULL,
    kind           text        NOT NULL,
    uri            text        NOT NULL,
    params         jsonb       NOT NULL,
    cost           numeric     CHECK (cost >= 0 AND cost < 1e20 AND scale(cost) <= 4),
    shot_id        text,
    task_id        text,
    reservation_id text,
    created_by     text        NOT NULL,
    created_at     timestamptz NOT NULL,
    -- The project version that registered it.
    version        bigint      NOT NULL,
    PRIMARY KEY (project_id, artifact_id)
);
CREATE INDEX artifacts_kind_idx ON artifacts (project_id, kind, created_at, artifact_id);
CREATE INDEX artifacts_shot_idx ON artifacts (project_id, shot_id, created_at, artifact_id);
CREATE INDEX artifacts_created_idx ON artifacts (project_id, created_at, artifact_id);

CREATE TABLE leases (
    name        text        PRIMARY KEY,
    -- NULL when released; a lease whose expires_at has passed is free whatever holder says.
    holder      text,
    token       bigint      NOT NULL CHECK (token >= 0),
    expires_at  timestamptz,
    state       jsonb       NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    partition   integer     NOT NULL,
    last_offset bigint      NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

ALTER TABLE change_log ADD COLUMN agent_run_id text;
ALTER TABLE change_log ADD COLUMN agent_model text;
ALTER TABLE change_log ADD COLUMN prompt_hash text;
