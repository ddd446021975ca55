-- 0001: the read models' generations (projector/generations.py), in the control schema
-- '<base>_control': which schema is live, which are being built, retired or abandoned.
-- IF NOT EXISTS: a control schema made before this file was recorded has them already.

CREATE TABLE IF NOT EXISTS generations (
    number     integer     PRIMARY KEY CHECK (number >= 0),
    schema     text        NOT NULL UNIQUE,
    state      text        NOT NULL CHECK (state IN ('building', 'live', 'retired', 'abandoned')),
    created_at timestamptz NOT NULL DEFAULT now(),
    swapped_at timestamptz
);

-- At most one live generation, enforced by the database rather than by care.
CREATE UNIQUE INDEX IF NOT EXISTS generations_one_live ON generations ((true)) WHERE state = 'live';
