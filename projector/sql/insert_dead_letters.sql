-- Records set aside, one array per column. A letter set aside again (a retry that failed, a held
-- record still behind one) keeps its row and takes the new reason and status.
INSERT INTO dead_letters (projection, topic, partition, "offset", reason, key, headers, value, stream, status)
SELECT $1, * FROM unnest($2::text[], $3::integer[], $4::bigint[], $5::text[], $6::bytea[], $7::jsonb[],
                         $8::bytea[], $9::text[], $10::text[])
ON CONFLICT (projection, topic, partition, "offset") DO UPDATE SET reason = excluded.reason,
    stream = excluded.stream, status = excluded.status, resolved_at = NULL
