-- One letter with its headers, key and value.
SELECT id, projection, topic, partition, "offset", reason, created_at, stream, status, resolved_at, headers, key, value
FROM dead_letters WHERE id = $1
