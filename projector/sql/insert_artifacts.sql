-- One array per column (projector.tables.ARTIFACTS); an artifact never changes once registered.
INSERT INTO artifacts (project_id, artifact_id, kind, uri, params, cost, shot_id, task_id, reservation_id,
                       created_by, created_at, version)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::numeric[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::bigint[])
ON CONFLICT (project_id, artifact_id) DO NOTHING
