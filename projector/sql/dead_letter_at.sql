SELECT id, status FROM dead_letters WHERE projection = $1 AND topic = $2 AND partition = $3 AND "offset" = $4
