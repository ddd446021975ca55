-- 0006: documents of any collection (reviews, corrections, evaluations, …): one row per
-- doc:<collection>.<doc_id> stream, folded with the document decider's own evolve.

CREATE TABLE documents (
    -- '<collection>.<doc_id>': the stream id after 'doc:'.
    id text PRIMARY KEY,
    collection text NOT NULL,
    doc_id text NOT NULL,
    body jsonb NOT NULL,
    -- link name → id (task_id, project_id, …), filtered as link.<name>=<value>.
    links jsonb NOT NULL DEFAULT '{}',
    -- A deleted document keeps its row (and its last body): history and include_deleted show it.
    deleted boolean NOT NULL DEFAULT false,
    created_by text NOT NULL,
    updated_by text NOT NULL,
    state jsonb NOT NULL,
    version bigint NOT NULL,
    partition integer NOT NULL,
    last_offset bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CONSTRAINT documents_id_is_collection_dot_doc_id CHECK (id = collection || '.' || doc_id)
);
-- where={...} is jsonb containment (body @> …), the one operator jsonb_path_ops indexes, smaller and faster than
-- the default jsonb_ops.
CREATE INDEX documents_body_idx ON documents USING gin (body jsonb_path_ops);
-- Keyset pages of one collection, in either sort.
CREATE INDEX documents_collection_updated_idx ON documents (collection, updated_at, id);
CREATE INDEX documents_collection_created_idx ON documents (collection, created_at, id);
