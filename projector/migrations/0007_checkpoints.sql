-- Checkpoints: one row per thread (its latest checkpoint), and one insert-only entry per checkpoint.
-- An entry holds the checkpoint's stored bytes when they travelled inline in the event; a blob's bytes
-- are in the blob store (its own schema, never rebuilt), and a restore of an inline checkpoint points
-- at the entry that holds them (inline_from) rather than copying them.

CREATE TABLE checkpoints (
    id            text        PRIMARY KEY,
    state         jsonb       NOT NULL,
    version       bigint      NOT NULL,
    partition     integer     NOT NULL,
    last_offset   bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    latest_seq    bigint      NOT NULL,
    count         integer     NOT NULL,
    latest_sha256 text        NULL,
    latest_size   bigint      NULL,
    latest_label  text        NULL
);

CREATE TABLE checkpoint_entries (
    thread_id     text        NOT NULL,
    seq           bigint      NOT NULL,
    sha256        text        NOT NULL,
    size          bigint      NOT NULL,
    stored_size   bigint      NOT NULL,
    encoding      text        NOT NULL,
    inline        bytea       NULL,
    inline_from   bigint      NULL,
    blob          boolean     NOT NULL,
    label         text        NULL,
    metadata      jsonb       NULL,
    parent_seq    bigint      NULL,
    restored_from bigint      NULL,
    command_id    text        NOT NULL,
    created_at    timestamptz NOT NULL,
    created_by    text        NOT NULL,
    PRIMARY KEY (thread_id, seq)
);
