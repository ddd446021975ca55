-- 0003: group membership on the PostgreSQL log (events/postgres/membership.py): the members of each
-- group as last seen, and one lease row per owned partition. IF NOT EXISTS: a log made before this
-- file was recorded may have them already (its members created them when they joined).

CREATE TABLE IF NOT EXISTS group_members (
    grp     text        NOT NULL,
    member  text        NOT NULL,
    seen_at timestamptz NOT NULL,
    PRIMARY KEY (grp, member)
);

-- One row per owned partition; a row whose expires_at has passed may be taken by anyone.
CREATE TABLE IF NOT EXISTS partition_leases (
    grp        text        NOT NULL,
    topic      text        NOT NULL,
    partition  integer     NOT NULL CHECK (partition >= 0),
    member     text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (grp, topic, partition)
);
