-- The change-log entries at the given (stream, version) pairs.
SELECT c.stream, c.stream_version, c.event_id FROM change_log c
JOIN unnest($1::text[], $2::bigint[]) AS k(s, v) ON c.stream = k.s AND c.stream_version = k.v
