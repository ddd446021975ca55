-- One array per column (projector.tables.SHOTS); created_at is set on insert only.
INSERT INTO shots (project_id, shot_id, fields, version, created_at, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
ON CONFLICT (project_id, shot_id) DO UPDATE SET fields = excluded.fields, version = excluded.version,
    updated_at = excluded.updated_at
