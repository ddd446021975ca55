-- The next offset of every partition a batch advanced.
INSERT INTO projection_offsets (projection, topic, partition, next_offset)
SELECT $1, $2, * FROM unnest($3::integer[], $4::bigint[])
ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()
