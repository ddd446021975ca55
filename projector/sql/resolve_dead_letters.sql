UPDATE dead_letters SET status = $3, resolved_at = now()
WHERE projection = $1 AND id = ANY($2::bigint[])
