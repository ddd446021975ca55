SELECT id, topic, partition, "offset", stream, status FROM dead_letters WHERE projection = $1 AND id = $2 FOR UPDATE
