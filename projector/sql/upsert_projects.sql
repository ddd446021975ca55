-- One array per column (projector.tables.PROJECTS); created_at is set on insert only.
INSERT INTO projects (id, title, currency, budget_total, spent, global_spec, version, partition, last_offset,
                      created_at, updated_at, state, status, reserved, spec_version, dna, reservations)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::numeric[], $6::jsonb[], $7::bigint[],
                     $8::integer[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], $12::jsonb[], $13::text[],
                     $14::numeric[], $15::bigint[], $16::jsonb[], $17::jsonb[])
ON CONFLICT (id) DO UPDATE SET title = excluded.title, currency = excluded.currency,
    budget_total = excluded.budget_total, spent = excluded.spent, global_spec = excluded.global_spec,
    version = excluded.version, partition = excluded.partition, last_offset = excluded.last_offset,
    updated_at = excluded.updated_at, state = excluded.state, status = excluded.status, reserved = excluded.reserved,
    spec_version = excluded.spec_version, dna = excluded.dna, reservations = excluded.reservations
