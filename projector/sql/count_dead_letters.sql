SELECT count(*) FROM dead_letters WHERE $1::text IS NULL OR status = $1
