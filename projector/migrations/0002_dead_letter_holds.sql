-- 0002: dead letters that hold their stream back, and their resolution.
--
-- A record set aside leaves a hole in its stream; later events of that stream are set aside
-- behind it ('held') instead of being applied on top of the hole. 'open' letters wait for an
-- operator: a retry (after a fix) applies them and releases the held ones in order ('applied'),
-- a skip gives up on one ('skipped') and releases the rest.
ALTER TABLE dead_letters ADD COLUMN stream text;
ALTER TABLE dead_letters ADD COLUMN status text NOT NULL DEFAULT 'open'
    CHECK (status IN ('open', 'held', 'applied', 'skipped'));
ALTER TABLE dead_letters ADD COLUMN resolved_at timestamptz;
-- Every batch asks which of its streams are held: only unresolved letters are indexed.
CREATE INDEX dead_letters_unresolved_idx ON dead_letters (stream) WHERE status IN ('open', 'held');
