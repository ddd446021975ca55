-- The newest letters (of a status when given), without their headers and bytes.
SELECT id, projection, topic, partition, "offset", reason, created_at, stream, status, resolved_at
FROM dead_letters WHERE $2::text IS NULL OR status = $2 ORDER BY id DESC LIMIT $1
