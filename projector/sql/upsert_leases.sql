-- One array per column (projector.rows.LEASES); created_at is set on insert only.
INSERT INTO leases (name, holder, token, expires_at, state, version, partition, last_offset, created_at, updated_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::jsonb[], $6::bigint[],
                     $7::integer[], $8::bigint[], $9::timestamptz[], $10::timestamptz[])
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at,
    state = excluded.state, version = excluded.version, partition = excluded.partition,
    last_offset = excluded.last_offset, updated_at = excluded.updated_at
