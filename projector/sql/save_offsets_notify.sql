-- The next offset of every partition a batch advanced, and the notification of the projection ($5), delivered
-- on commit, in one round trip.
WITH saved AS (
    INSERT INTO projection_offsets (projection, topic, partition, next_offset)
    SELECT $1, $2, * FROM unnest($3::integer[], $4::bigint[])
    ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = excluded.next_offset, updated_at = now()
    RETURNING 1
)
SELECT pg_notify($5, $1) FROM (SELECT count(*) FROM saved) AS s
