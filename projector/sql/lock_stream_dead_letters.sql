-- The unresolved letters of one stream, in log order.
SELECT id, topic, partition, "offset", stream, status FROM dead_letters
WHERE projection = $1 AND stream = $2 AND status IN ('open', 'held') ORDER BY partition, "offset" FOR UPDATE
