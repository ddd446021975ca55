-- 0001: the PostgreSQL log: topics, a counter row per partition, and the records.

CREATE TABLE topics (
    topic      text        PRIMARY KEY,
    partitions integer     NOT NULL CHECK (partitions > 0),
    config     jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per partition holding the next offset. An appender locks it FOR UPDATE, so the
-- appenders of one partition take turns and commit in offset order: offsets are dense and a
-- reader that saw offset n never finds n-1 committing later (the failure of one global sequence).
CREATE TABLE partitions (
    topic       text    NOT NULL REFERENCES topics (topic),
    partition   integer NOT NULL CHECK (partition >= 0),
    next_offset bigint  NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
    PRIMARY KEY (topic, partition)
);

-- The primary key is also the fence: two writers can never both own one offset.
CREATE TABLE records (
    topic         text    NOT NULL,
    partition     integer NOT NULL,
    "offset"      bigint  NOT NULL,
    key           bytea,
    header_keys   text[]  NOT NULL,
    header_values bytea[] NOT NULL,
    value         bytea,
    timestamp_ms  bigint  NOT NULL,
    PRIMARY KEY (topic, partition, "offset"),
    FOREIGN KEY (topic, partition) REFERENCES partitions (topic, partition)
);
