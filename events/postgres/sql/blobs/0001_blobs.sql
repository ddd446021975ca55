-- 0001: the blob store (events/postgres/blobs.py): a blob's stored form under the sha256 of its
-- original bytes. IF NOT EXISTS: a store made before this file was recorded has the table already.

CREATE TABLE IF NOT EXISTS blobs (
    sha256      text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size        bigint      NOT NULL CHECK (size >= 0),
    encoding    text        NOT NULL CHECK (encoding IN ('zlib', 'identity')),
    data        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
