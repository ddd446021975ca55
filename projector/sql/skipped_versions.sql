-- The versions of the skipped letters of some streams (their headers' stream_version, when a number).
SELECT stream, (headers->>'stream_version')::integer AS version FROM dead_letters
WHERE projection = $1 AND stream = ANY($2::text[]) AND status = 'skipped'
    AND headers->>'stream_version' ~ '^[0-9]{1,9}$'
